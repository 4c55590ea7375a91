#!/usr/bin/env bash
# CPU model throughput at real sizes (CLIP ViT-B/32, BLIP-base captioning, random weights):
# PyTorch eager f32 | candle f32 | ONNX Runtime f32 | ONNX Runtime int8, side by side on the
# same checkpoints (and graphs exported from them), same batch sizes, same timing protocol,
# in one run. Python environment: scripts/python-env.sh (torch, transformers, onnxruntime).
# Usage: benches/compare_model_cpu.sh [--batches 1,8,32] [--caption-batches 1,8,32] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
PY="$FUSIONSTREAM_PYTHON"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
MODELS="${FUSIONSTREAM_BENCH_MODELS:-$PWD/target/bench-models}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
"$PY" benches/make_models.py "$MODELS" >/dev/null
for m in clip-vit-b32 blip-base-caption; do
  [[ -f "$MODELS/$m/onnx/manifest.json" ]] || "$PY" -m models.export_onnx --int8 --model "$MODELS/$m"
done
out=$(mktemp)
echo "== PyTorch (eager, f32, $RAYON_NUM_THREADS threads)"
OMP_NUM_THREADS=$RAYON_NUM_THREADS "$PY" benches/model_cpu_torch.py "$MODELS" "$@" | tee "$out"
echo "== Rust: candle f32, ONNX Runtime f32, ONNX Runtime int8 ($RAYON_NUM_THREADS threads)"
cargo run -q --release -p fusionstream-model --example backend_bench -- "$MODELS" "$@" | tee -a "$out"
"$PY" - "$out" <<'PYEOF'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\S+) ([0-9.]+) items/s", line)
    if m:
        rows.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
cols = ["pytorch", "candle", "onnx-f32", "onnx-int8"]
print("\n| model/task/batch | PyTorch eager f32 | candle f32 | ORT f32 | ORT int8 | ORT int8 / PyTorch |")
print("|---|---|---|---|---|---|")
for k, v in rows.items():
    cells = [f"{v[c]:.2f}" if c in v else "—" for c in cols]
    ratio = f"{v['onnx-int8'] / v['pytorch']:.2f}×" if "onnx-int8" in v and "pytorch" in v else "—"
    print(f"| {k} | " + " | ".join(cells) + f" | {ratio} |")
PYEOF
rm -f "$out"
