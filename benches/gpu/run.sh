#!/usr/bin/env bash
# The prepared GPU run: builds nothing, needs the binaries `benches/gpu/build.sh` puts in
# target/gpu/ (xz-packed; unpacked here) and python3 with torch + transformers. From the
# repository root on the GPU machine:
#
#   benches/gpu/run.sh [RESULTS_DIR]        (default: $OUT, else target/gpu-results)
#
# Steps, each under a time limit, each writing its results before the next starts:
#   1. random-weight checkpoints at real sizes (benches/make_models.py: CLIP ViT-B/32, ViT-B/16,
#      BLIP-base captioning)
#   2. parity, f32: candle on the GPU (batched) vs PyTorch on the GPU (row by row), same inputs
#   3. throughput, DTYPE (f16): candle vs PyTorch eager, same checkpoints/batches/protocol
#   4. the product on the GPU: `fusionstream run` on the embedded default with the model on
#      DEVICE, compared record by record with the same run on the CPU
#   5. the whole pipeline on the GPU: EVENTS generated events, events/s and model-thread time
# and a summary (summary.md) at the end. Exit status 1 when a check failed or a step failed.
# Dry run on a machine without GPU:
#   benches/gpu/build.sh --cpu && DEVICE=cpu DTYPE=f32 QUICK=1 EVENTS=300 benches/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
res="${1:-${OUT:-target/gpu-results}}"
mkdir -p "$res"
py="${PYTHON:-python3}"
bin=target/gpu
models="${FUSIONSTREAM_BENCH_MODELS:-target/bench-models}"
device="${DEVICE:-cuda}"
dtype="${DTYPE:-f16}"
events="${EVENTS:-6000}"
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
failed=()

# The binaries travel xz-packed (build.sh); unpacked next to their archives with Python's lzma
# (python3 is there for the PyTorch side; the xz tool may not be).
for f in "$bin"/*.xz; do
  [ -e "$f" ] || continue
  [ -x "${f%.xz}" ] && [ "${f%.xz}" -nt "$f" ] && continue
  "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$f" "${f%.xz}" && chmod +x "${f%.xz}"
done

# The CUDA 13 libraries that come with PyTorch's wheels, and the toolkit's if installed.
cu13=$("$py" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
for d in "$cu13" /usr/local/cuda-13.0/targets/x86_64-linux/lib; do
  [ -n "$d" ] && [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH

step() { # step NAME SECONDS CMD...: run with a limit, log to $res/NAME.log, remember failures
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$res/$name.log" 2> "$res/$name.err"
  rc=$?
  cat "$res/$name.log"
  [ "$rc" -eq 0 ] || tail -n 20 "$res/$name.err"
  echo "   $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$res/steps.txt"
  [ "$rc" -eq 0 ] || failed+=("$name")
  return "$rc"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
  "$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  echo "device: $device, bench dtype: $dtype, quick: ${QUICK:-0}, events: $events"
} | tee "$res/machine.txt"

step models 300 "$py" benches/make_models.py "$models"

step parity_candle 240 "$bin/model_bench" check --models "$models" --device "$device" --out "$res/check-candle.json"
step parity_torch 240 "$py" benches/gpu/torch_side.py check --models "$models" --device "$device" --out "$res/check-torch.json"
step parity 30 "$py" benches/gpu/compare.py --check "$res/check-candle.json" "$res/check-torch.json" --markdown "$res/parity.md"

step bench_candle 300 "$bin/model_bench" bench --models "$models" --device "$device" --dtype "$dtype" "${quick[@]}"
step bench_torch 300 "$py" benches/gpu/torch_side.py bench --models "$models" --device "$device" --dtype "$dtype" "${quick[@]}"
step bench 30 "$py" benches/gpu/compare.py --bench "$res/bench_candle.log" "$res/bench_torch.log" --markdown "$res/bench.md"

# The worker itself: embedded default (examples/), model on the CPU and on DEVICE (f32).
quiet=(env FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn)
step run_cpu 120 "${quiet[@]}" FUSIONSTREAM__MODEL__DEVICE=cpu "$bin/fusionstream" run --fresh --out "$res/run-cpu" --json
step run_device 240 "${quiet[@]}" FUSIONSTREAM__MODEL__DEVICE="$device" "$bin/fusionstream" run --fresh --out "$res/run-device" --json
step same_outputs 30 "$py" benches/gpu/same_outputs.py "$res/run-cpu" "$res/run-device"

# The whole pipeline at load, model on DEVICE (f32 and DTYPE) and on the CPU.
"$py" benches/make_events.py "$events" "$res/events.jsonl" >/dev/null
for variant in $(printf '%s\n' "$device:f32" "$device:$dtype" "cpu:f32" | awk '!seen[$0]++'); do
  d=${variant%%:*} t=${variant##*:}
  step "pipeline_${d}_$t" 300 "${quiet[@]}" FUSIONSTREAM__MODEL__DEVICE="$d" FUSIONSTREAM__MODEL__DTYPE="$t" \
    "$bin/fusionstream" run --fresh --events "$res/events.jsonl" --out "$res/pipeline-$d-$t" --json
done

{
  echo "# GPU run summary"
  echo
  cat "$res/machine.txt"
  echo
  cat "$res/parity.md" 2>/dev/null
  cat "$res/bench.md" 2>/dev/null
  echo "Product on $device vs CPU (embedded default, f32, record by record):"
  echo
  sed 's/^/    /' "$res/same_outputs.log" 2>/dev/null
  echo
  echo "Pipeline ($events events, bundle models/shapes):"
  echo
  for f in "$res"/pipeline_*.log; do
    [ -s "$f" ] || continue
    "$py" - "$f" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
name = os.path.basename(sys.argv[1])[: -len(".log")]
print(f"    {name}: {s['events_per_second']:.1f} events/s, p50 {s['latency_p50_ms']:.0f} ms, "
      f"p99 {s['latency_p99_ms']:.0f} ms, model thread busy {s['model_seconds']:.1f} of {s['seconds']:.1f} s")
PY
  done
  echo
  echo "Steps:"
  sed 's/^/   /' "$res/steps.txt"
  [ ${#failed[@]} -eq 0 ] && echo "all steps passed" || echo "FAILED: ${failed[*]}"
} > "$res/summary.md"
cat "$res/summary.md"
[ ${#failed[@]} -eq 0 ]
