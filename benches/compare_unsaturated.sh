#!/usr/bin/env bash
# Latency below saturation, through Kafka and S3, side by side in one run: each worker's
# capacity is measured first on a backlog of N events (the mix of benches/make_events.py,
# images in MinIO), then events are produced at FRACTION (default 0.5) of that capacity for
# LOAD_SECONDS (default 20) while the worker runs, and each event's latency is measured from
# outside (benches/kafka_paced.py): its input record's create time → each of its output
# records' create time. fusionstream runs with the defaults (priority scheduler, adaptive
# read-ahead); the Python worker is benches/python_kafka_worker.py (batch 32).
# Usage (repository root): [FRACTION=0.5] [LOAD_SECONDS=20] [BACKEND=onnx:int8] benches/compare_unsaturated.sh [N] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
n="${1:-1500}"
py="${2:-$FUSIONSTREAM_PYTHON}"
fraction="${FRACTION:-0.5}"
secs="${LOAD_SECONDS:-20}"
backend="${BACKEND:-onnx:int8}"
export FUSIONSTREAM__MODEL__BACKEND="${backend%%:*}" FUSIONSTREAM__MODEL__PRECISION="${backend##*:}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
broker="$FUSIONSTREAM_TEST_KAFKA"
run="unsat-$$-$(date +%s)"
bucket="$run-media"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/make_events.py "$n" "$work/backlog.jsonl" "$bucket"
"$py" - "$run" "$bucket" <<'PY'
import os, sys, boto3
from confluent_kafka.admin import AdminClient, NewTopic
run, bucket = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
s3.create_bucket(Bucket=bucket)
for i in range(6):
    s3.upload_file(f"examples/media/scene{i}.png", bucket, f"scene{i}.png")
topics = []
for side in ("rust-cap", "rust-paced", "py-cap", "py-paced"):
    topics.append(NewTopic(f"{run}.{side}.events", 3, 1))
    topics += [NewTopic(f"{run}.{side}.{s}", 1, 1)
               for s in ("captions", "answers", "embeddings", "tags", "dead_letters")]
admin = AdminClient({"bootstrap.servers": os.environ["FUSIONSTREAM_TEST_KAFKA"]})
for f in admin.create_topics(topics).values():
    f.result()
PY
rust() { # side max_events
  local prefix="$run.$1"
  FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
  FUSIONSTREAM__SOURCE__KIND=kafka FUSIONSTREAM__SINK__KIND=kafka \
  FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS="$broker" FUSIONSTREAM__KAFKA__GROUP_ID="$prefix" \
  FUSIONSTREAM__KAFKA__INPUT_TOPICS="[\"$prefix.events\"]" \
  FUSIONSTREAM__KAFKA__CAPTIONS_TOPIC="$prefix.captions" FUSIONSTREAM__KAFKA__ANSWERS_TOPIC="$prefix.answers" \
  FUSIONSTREAM__KAFKA__EMBEDDINGS_TOPIC="$prefix.embeddings" FUSIONSTREAM__KAFKA__TAGS_TOPIC="$prefix.tags" \
  FUSIONSTREAM__KAFKA__DEAD_LETTERS_TOPIC="$prefix.dead_letters" \
  FUSIONSTREAM__S3__ENABLED=true FUSIONSTREAM__S3__ENDPOINT="$FUSIONSTREAM_TEST_S3_ENDPOINT" \
  FUSIONSTREAM__S3__FORCE_PATH_STYLE=true FUSIONSTREAM__S3__ALLOWED_BUCKETS="[\"$bucket\"]" \
    "$CARGO_TARGET_DIR/release/fusionstream" run --max-events "$2" --json 2>/dev/null
}
python() { # side max_events
  "$py" benches/python_kafka_worker.py "$broker" "$run.$1" "$run.$1.events" "$run.$1" "$2" 32 \
    2> "$work/python.err" || { cat "$work/python.err" >&2; exit 1; }
}
rate_of() { "$py" -c 'import json,sys; print(json.load(sys.stdin)["events_per_second"])'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "events: the mix of benches/make_events.py, images from S3; backend $backend"
for side in rust py; do
  "$py" benches/kafka_paced.py produce "$broker" "$run.$side-cap.events" "$work/backlog.jsonl" 100000 > /dev/null
  if [ "$side" = rust ]; then cap=$(rust rust-cap "$n" | rate_of); else cap=$(python py-cap "$n" | rate_of); fi
  rate=$("$py" -c "print(round($cap * $fraction, 1))")
  m=$("$py" -c "print(int($rate * $secs))")
  echo "== $side: capacity $cap events/s on a backlog of $n; paced at $rate events/s for ${secs} s ($m events)"
  "$py" benches/make_events.py "$m" "$work/paced-$side.jsonl" "$bucket"
  if [ "$side" = rust ]; then rust rust-paced "$m" > "$work/summary-$side.json" &
  else python py-paced "$m" > "$work/summary-$side.json" & fi
  worker=$!
  # Load starts once the worker has joined its group and holds partitions (model loaded).
  "$py" benches/kafka_paced.py wait-group "$broker" "$run.$side-paced"
  "$py" benches/kafka_paced.py produce "$broker" "$run.$side-paced.events" "$work/paced-$side.jsonl" "$rate"
  wait "$worker"
  echo "   worker: $(cat "$work/summary-$side.json" | "$py" -c 'import json,sys; s=json.load(sys.stdin); print({k: s.get(k) for k in ["events_per_second","latency_p50_ms","latency_p99_ms"]})')"
  echo "   produced -> output acknowledged: $("$py" benches/kafka_paced.py latency "$broker" "$run.$side-paced.events" "$run.$side-paced")"
done
