#!/usr/bin/env bash
# End-to-end, side by side in one run: `fusionstream run` (release build) and the Python
# worker (benches/python_worker.py, transformers) on the same N events, same bundle, same
# machine. fusionstream runs once per entry of BACKENDS (model.backend:model.precision,
# default "candle:f32 onnx:f32 onnx:int8"; onnx uses the library of scripts/python-env.sh).
# Prints each run's events/s and latency percentiles.
# Usage (repository root): [BACKENDS=...] benches/compare_pipeline.sh [N] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
n="${1:-3000}"
py="${2:-$FUSIONSTREAM_PYTHON}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/make_events.py "$n" "$work/events.jsonl"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "events: $n (1/3 image+text+question all tasks, 1/3 image caption+embed+tag, 1/3 text only)"
for b in ${BACKENDS:-candle:f32 onnx:f32 onnx:int8}; do
  echo "== fusionstream run (model.backend ${b%%:*}, precision ${b##*:})"
  rm -rf "$work/rust"
  FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
  FUSIONSTREAM__MODEL__BACKEND="${b%%:*}" FUSIONSTREAM__MODEL__PRECISION="${b##*:}" \
    "$CARGO_TARGET_DIR/release/fusionstream" run --events "$work/events.jsonl" --out "$work/rust" --json \
    2>/dev/null | "$py" -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ["backends","finished","seconds","events_per_second","latency_p50_ms","latency_p99_ms","model_seconds","batches"]}))'
done
echo "== python worker (transformers, batch 32)"
"$py" benches/python_worker.py "$work/events.jsonl" "$work/python" 32
