#!/usr/bin/env bash
# ONNX Runtime without Python: downloads the pinned `onnxruntime` wheel alone from PyPI (no
# dependencies, no virtualenv: pip only fetches the file), checks its SHA-256, and extracts its
# shared library into $HOME/.cache/fusionstream/onnxruntime/<version>/ — where the worker looks
# for it when neither `model.onnxruntime_library` nor ORT_DYLIB_PATH is set (the lookup order:
# docs/model-runtime.md). With it, `model.backend = "auto"` runs the bundle's ONNX graphs (int8
# on the CPU) and the moderation packs load. Idempotent: an extracted library is checked, not
# fetched again. Prints `export ORT_DYLIB_PATH=…` on stdout (optional: the worker finds the
# library without it); progress goes to stderr.
# Usage: scripts/fetch-onnxruntime.sh
set -euo pipefail
VERSION=1.31.1
# The wheel per machine (Python tag cp311: the library inside is the same for every tag).
case "$(uname -m)" in
  x86_64 | amd64)
    PLATFORM=manylinux_2_28_x86_64
    WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
    LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
    ;;
  aarch64 | arm64)
    PLATFORM=manylinux_2_28_aarch64
    WHEEL_SHA256=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
    LIB_SHA256=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467
    ;;
  *)
    echo "fetch-onnxruntime: no pinned wheel for $(uname -m)" >&2
    exit 1
    ;;
esac
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
DEST="$CACHE/onnxruntime/$VERSION"
LIB="$DEST/libonnxruntime.so.$VERSION"
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f $LIB && $(sha "$LIB") == "$LIB_SHA256" ]]; then
  echo "fetch-onnxruntime: ONNX Runtime $VERSION installed ($LIB)" >&2
  echo "export ORT_DYLIB_PATH=$LIB"
  exit 0
fi
python="${FUSIONSTREAM_PYTHON:-python3}"
wheels="$CACHE/wheels"
mkdir -p "$wheels" "$DEST"
whl="$wheels/onnxruntime-$VERSION-cp311-cp311-$PLATFORM.whl"
if [[ ! -f $whl ]]; then
  echo "fetch-onnxruntime: downloading onnxruntime $VERSION ($PLATFORM) from PyPI" >&2
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version 3.11 --platform "$PLATFORM" "onnxruntime==$VERSION" -d "$wheels" >&2
fi
if [[ $(sha "$whl") != "$WHEEL_SHA256" ]]; then
  echo "fetch-onnxruntime: $whl has SHA-256 $(sha "$whl"), expected $WHEEL_SHA256" >&2
  exit 1
fi
tmp=$(mktemp -d "$DEST/.extract.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" - "$whl" "$tmp" "$VERSION" <<'PY'
import shutil, sys, zipfile
whl, out, version = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for name in (f"libonnxruntime.so.{version}", "libonnxruntime_providers_shared.so"):
        with z.open(f"onnxruntime/capi/{name}") as r, open(f"{out}/{name}", "wb") as w:
            shutil.copyfileobj(r, w)
PY
if [[ $(sha "$tmp/libonnxruntime.so.$VERSION") != "$LIB_SHA256" ]]; then
  echo "fetch-onnxruntime: the library in $whl is not the pinned one" >&2
  exit 1
fi
mv "$tmp"/* "$DEST/"
echo "fetch-onnxruntime: ONNX Runtime $VERSION installed into $DEST" >&2
echo "export ORT_DYLIB_PATH=$LIB"
