#!/usr/bin/env bash
# The image's smoke test (part of scripts/test.sh): builds the image with
# scripts/build-image.sh from a binary already built here (BINARY, default the test build
# that `cargo test` leaves in the target dir: no second compile) and the model packs baked
# (scripts/fetch-packs.sh; the moderation example runs on them), then scripts/image_smoke.py
# runs it from its OCI archive as the Helm chart runs it — uid 65532, read-only root, the
# chart's ConfigMap and env — and checks `fusionstream config`, the embedded default, and a
# Kafka worker on the dev services (health, readiness, metrics, outputs, SIGTERM, offsets).
# Needs root and the dev services (scripts/dev-services.sh up); installs buildah and
# debootstrap from Debian's packages when missing. Without root or apt, it says why and skips.
# Usage: [BINARY=path] scripts/test-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
binary=${BINARY:-$CARGO_TARGET_DIR/debug/fusionstream}
if [[ $(id -u) != 0 ]]; then
  echo "image test: SKIPPED (buildah's chroot isolation and the namespaces of scripts/image-run.sh need root)"
  exit 0
fi
if ! command -v buildah >/dev/null && ! command -v apt-get >/dev/null; then
  echo "image test: SKIPPED (no buildah and no apt-get to install it)"
  exit 0
fi
[[ -x $binary ]] || cargo build --locked -p fusionstream
eval "$(scripts/python-env.sh)"
eval "$(scripts/dev-services.sh env)"
t0=$(date +%s)
build=$(scripts/build-image.sh --binary "$binary" --packs --tag "fusionstream:$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)")
echo "$build"
archive=$(sed -n 's/^image: \([^ ]*\) .*/\1/p' <<<"$build")
ref=$(sed -n 's/^image-ref: //p' <<<"$build")
echo "image test: built in $(($(date +%s) - t0)) s"
"$FUSIONSTREAM_PYTHON" scripts/image_smoke.py "$archive" "$ref" "$(scripts/helm-bin.sh)"
