#!/usr/bin/env bash
# Scheduling under saturation, side by side in one run: the standard N-event mix
# (benches/make_events.py) with every 10th event high-priority, through
#   1. fusionstream with the FIFO batcher and the fixed read-ahead of 256 (the behaviour before
#      the scheduler: scheduler.mode = fifo, min_in_flight = max_in_flight = 256),
#   2. fusionstream with the defaults (priority scheduler, adaptive read-ahead),
#   3. the Python worker (benches/python_worker.py, transformers, batch 32),
# and the unloaded latency: the high-priority events alone, one in flight at a time.
# Prints events/s and p50/p99 latency overall and per lane and priority (read → that lane's
# outputs acknowledged), from each run's summary.
# Usage (repository root): [BACKEND=onnx:int8] benches/compare_scheduling.sh [N] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
n="${1:-3000}"
py="${2:-$FUSIONSTREAM_PYTHON}"
backend="${BACKEND:-onnx:int8}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/make_events.py "$n" "$work/plain.jsonl"
"$py" - "$work" <<'EOF'
import json, sys
work = sys.argv[1]
with open(f"{work}/plain.jsonl") as f, open(f"{work}/events.jsonl", "w") as out, \
        open(f"{work}/high.jsonl", "w") as high:
    for i, line in enumerate(f):
        e = json.loads(line)
        if i % 10 == 7:
            e["priority"] = "high"
            high.write(json.dumps(e) + "\n")
        out.write(json.dumps(e) + "\n")
EOF
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "events: $n (1/3 image+text+question all tasks, 1/3 image caption+embed+tag, 1/3 text only; every 10th high-priority); backend $backend"
cat > "$work/summary.py" <<'EOF'
import json, sys
s = json.load(sys.stdin)
print("  %.1f events/s, p50 %.0f ms, p99 %.0f ms, model busy %.1f of %.1f s" % (
    s["events_per_second"], s["latency_p50_ms"], s["latency_p99_ms"], s["model_seconds"], s["seconds"]))
for k, v in s.get("latency_by_lane", {}).items():
    print("  %-16s %6d outputs  p50 %7.0f ms  p99 %7.0f ms" % (k, v["outputs"], v["p50_ms"], v["p99_ms"]))
EOF
summary() { "$py" "$work/summary.py"; }
run() {
  local events="$1"; shift
  rm -rf "$work/rust"
  env FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
    FUSIONSTREAM__MODEL__BACKEND="${backend%%:*}" FUSIONSTREAM__MODEL__PRECISION="${backend##*:}" "$@" \
    "$CARGO_TARGET_DIR/release/fusionstream" run --events "$events" --out "$work/rust" --json \
    2>/dev/null | summary
}
echo "== unloaded: the high-priority events alone, one in flight"
run "$work/high.jsonl" FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT=1 FUSIONSTREAM__PIPELINE__MIN_IN_FLIGHT=1
echo "== fusionstream, fifo, 256 in flight (before)"
run "$work/events.jsonl" FUSIONSTREAM__SCHEDULER__MODE=fifo \
  FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT=256 FUSIONSTREAM__PIPELINE__MIN_IN_FLIGHT=256
echo "== fusionstream, priority scheduler, 256 in flight"
run "$work/events.jsonl" FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT=256 FUSIONSTREAM__PIPELINE__MIN_IN_FLIGHT=256
echo "== fusionstream, defaults (priority scheduler, adaptive read-ahead)"
run "$work/events.jsonl"
echo "== python worker (transformers, batch 32)"
"$py" benches/python_worker.py "$work/events.jsonl" "$work/python" 32
