#!/usr/bin/env bash
# CPU model throughput at real sizes (CLIP ViT-B/32, BLIP-base captioning, random weights):
# candle (this runtime) and PyTorch eager side by side on the same checkpoints, in one run.
# Needs python3 with torch + transformers. Usage: benches/compare_model_cpu.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
export FUSIONSTREAM_BENCH_MODELS="${FUSIONSTREAM_BENCH_MODELS:-$PWD/target/bench-models}"
"$PY" benches/make_models.py "$FUSIONSTREAM_BENCH_MODELS"
echo "== PyTorch (eager, f32)"
"$PY" benches/model_cpu_torch.py "$FUSIONSTREAM_BENCH_MODELS"
echo "== candle (fusionstream-model, f32)"
cargo bench -q -p fusionstream-model --bench model_cpu -- --noplot 2>&1 \
  | grep -E "_cpu/|thrpt" | paste - - | awk '{print $1, $(NF-3), $(NF-2)}'
