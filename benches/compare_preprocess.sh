#!/usr/bin/env bash
# Decode + resize + normalise to CLIP 224 (and BLIP 384), one core: Rust (criterion) and PIL
# side by side on the same JPEG files, in one run. Needs python3 with pillow + numpy
# (transformers optional). Usage: benches/compare_preprocess.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
export FUSIONSTREAM_BENCH_PHOTOS="${FUSIONSTREAM_BENCH_PHOTOS:-$PWD/target/bench-photos}"
"$PY" benches/make_photos.py "$FUSIONSTREAM_BENCH_PHOTOS"
echo "== PIL (one core)"
OMP_NUM_THREADS=1 "$PY" benches/preprocess_pil.py "$FUSIONSTREAM_BENCH_PHOTOS"
echo "== Rust (criterion, one thread)"
RAYON_NUM_THREADS=1 cargo bench -q -p fusionstream-model --bench preprocess -- --noplot 2>&1 \
  | grep -E "^preprocess/|thrpt" | paste - - | awk '{print $1, $(NF-3), $(NF-2)}'
