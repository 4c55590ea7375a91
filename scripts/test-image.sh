#!/usr/bin/env bash
# The image's smoke test (part of scripts/test.sh): builds the image with
# scripts/build-image.sh from a binary already built here (BINARY, default the test build
# that `cargo test` leaves in the target dir: no second compile) and the model packs baked
# (scripts/fetch-packs.sh; the moderation example runs on them), pushes it to a registry on
# 127.0.0.1, then scripts/image_smoke.py pulls it into an empty store and runs it as the Helm
# chart runs it — uid 65532, read-only root, the
# chart's ConfigMap and env — and checks `fusionstream config`, the embedded default, and a
# Kafka worker on the dev services (health, readiness, metrics, outputs, SIGTERM, offsets).
# Needs root and the dev services (scripts/dev-services.sh up); installs buildah and
# debootstrap from Debian's packages when missing. Without root or apt, it says why and skips.
# Usage: [BINARY=path] scripts/test-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
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

# A registry on 127.0.0.1 (CNCF Distribution, built once from the Go module proxy): the image is
# pushed as the README pushes it, and the smoke test pulls it back into an empty store, as a
# node would. Plain HTTP on loopback, hence --tls-verify=false.
registry_bin=$(scripts/registry-bin.sh)
reg=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$reg/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $reg/data}}
http: {addr: "127.0.0.1:$port"}
YAML
"$registry_bin" serve "$reg/config.yml" > "$reg/log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$reg"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
remote="127.0.0.1:$port/media/fusionstream:${ref#*:}"
buildah --storage-driver vfs push --quiet --tls-verify=false "$ref" "docker://$remote"
echo "image test: pushed to $remote"
"$FUSIONSTREAM_PYTHON" scripts/image_smoke.py "$archive" "$ref" "$(scripts/helm-bin.sh)" "$remote"
