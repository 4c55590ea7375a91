#!/usr/bin/env bash
# End-to-end through Kafka and S3, side by side in one run: N events (images in MinIO, the
# mix of benches/make_events.py) produced to an input topic, then consumed by a fusionstream
# worker (Kafka source and sink, S3 media, release build) and, from its own copy of the
# topic, by the straightforward Python worker (benches/python_kafka_worker.py:
# confluent-kafka, boto3, PIL, transformers; same bundle). Both start with the whole backlog
# waiting. Prints each side's events/s, event latency percentiles (read -> outputs
# acknowledged) and the records each wrote.
# fusionstream runs once per value of IN_FLIGHT (pipeline.max_in_flight, default "256 64"):
# with a backlog, its read -> acknowledged latency is about in-flight / throughput.
# The model runs on model.backend:model.precision of BACKEND (default onnx:int8; candle:f32
# for the candle runtime).
# Usage (repository root): [IN_FLIGHT="256 64"] [BACKEND=onnx:int8] benches/compare_kafka.sh [N] [PYTHON]
# PYTHON (default: scripts/python-env.sh's) gets confluent-kafka and boto3 installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
n="${1:-3000}"
py="${2:-$FUSIONSTREAM_PYTHON}"
backend="${BACKEND:-onnx:int8}"
export FUSIONSTREAM__MODEL__BACKEND="${backend%%:*}" FUSIONSTREAM__MODEL__PRECISION="${backend##*:}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
run="bench-$$-$(date +%s)"
bucket="$run-media"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/make_events.py "$n" "$work/events.jsonl" "$bucket"
IN_FLIGHT="${IN_FLIGHT:-256 64}" "$py" - "$run" "$bucket" "$work/events.jsonl" <<'PY'
import os, sys, boto3
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
run, bucket, events = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
s3.create_bucket(Bucket=bucket)
for i in range(6):
    s3.upload_file(f"examples/media/scene{i}.png", bucket, f"scene{i}.png")
bootstrap = os.environ["FUSIONSTREAM_TEST_KAFKA"]
topics = [NewTopic(f"{run}.{side}.events", 3, 1) for side in ("rust", "py")]
sides = ["py"] + [f"rust{k}" for k in os.environ.get("IN_FLIGHT", "256 64").split()]
topics += [NewTopic(f"{run}.{side}.{s}", 1, 1) for side in sides
           for s in ("captions", "answers", "embeddings", "tags", "dead_letters")]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics(topics).values():
    f.result()
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
lines = open(events).read().splitlines()
for side in ("rust", "py"):
    for i, line in enumerate(lines):
        p.produce(f"{run}.{side}.events", key=str(i), value=line)
        p.poll(0)
assert p.flush(60) == 0
PY
counts() { # prefix
  "$py" - "$1" <<'PY'
import os, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": os.environ["FUSIONSTREAM_TEST_KAFKA"], "group.id": "bench-counts"})
out = {}
for s in ("captions", "answers", "embeddings", "tags", "dead_letters"):
    lo, hi = c.get_watermark_offsets(TopicPartition(f"{sys.argv[1]}.{s}", 0), timeout=10)
    out[s] = hi - lo
print("   records:", out)
PY
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "events: $n (1/3 image+text+question all tasks, 1/3 image caption+embed+tag, 1/3 text only; images from S3)"
for inflight in ${IN_FLIGHT:-256 64}; do
echo "== fusionstream (Kafka source and sink, S3 media; pipeline.max_in_flight=$inflight)"
prefix="$run.rust$inflight"
FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT="$inflight" \
FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
  FUSIONSTREAM__SOURCE__KIND=kafka FUSIONSTREAM__SINK__KIND=kafka \
  FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS="$FUSIONSTREAM_TEST_KAFKA" \
  FUSIONSTREAM__KAFKA__GROUP_ID="$run-rust$inflight" \
  FUSIONSTREAM__KAFKA__INPUT_TOPICS="[\"$run.rust.events\"]" \
  FUSIONSTREAM__KAFKA__CAPTIONS_TOPIC="$prefix.captions" \
  FUSIONSTREAM__KAFKA__ANSWERS_TOPIC="$prefix.answers" \
  FUSIONSTREAM__KAFKA__EMBEDDINGS_TOPIC="$prefix.embeddings" \
  FUSIONSTREAM__KAFKA__TAGS_TOPIC="$prefix.tags" \
  FUSIONSTREAM__KAFKA__DEAD_LETTERS_TOPIC="$prefix.dead_letters" \
  FUSIONSTREAM__S3__ENABLED=true FUSIONSTREAM__S3__ENDPOINT="$FUSIONSTREAM_TEST_S3_ENDPOINT" \
  FUSIONSTREAM__S3__FORCE_PATH_STYLE=true FUSIONSTREAM__S3__ALLOWED_BUCKETS="[\"$bucket\"]" \
  "$CARGO_TARGET_DIR/release/fusionstream" run --max-events "$n" --json 2>/dev/null |
  "$py" -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ["backends","finished","seconds","events_per_second","latency_p50_ms","latency_p99_ms","model_seconds","batches"]}))'
counts "$prefix"
done
echo "== python worker (confluent-kafka + boto3 + PIL + transformers, batch 32)"
"$py" benches/python_kafka_worker.py "$FUSIONSTREAM_TEST_KAFKA" "$run-py" "$run.py.events" "$run.py" "$n" 32 \
  2> "$work/python.err" || { cat "$work/python.err" >&2; exit 1; }
counts "$run.py"
