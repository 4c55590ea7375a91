#!/usr/bin/env bash
# Delivery modes side by side in one run: the same N events (images in MinIO, the mix of
# benches/make_events.py) waiting on one input topic, read by a fusionstream worker once per
# mode (each its own consumer group and output topics; release build, Kafka source and sink,
# S3 media): at-least-once, then exactly-once (Kafka transactions) at each
# kafka.transaction_interval of INTERVALS. With the whole backlog waiting the worker runs at
# saturation. Prints each mode's events/s, event latency p50/p99 (read -> outputs
# acknowledged; exactly-once: read -> transaction committed, when a read_committed reader can
# see them), transactions committed/aborted and the records each wrote (read_committed).
# Usage (repository root): [BINARY=path] [INTERVALS="100ms 500ms"] [BACKEND=onnx:int8] benches/compare_delivery.sh [N]
# BINARY defaults to the release build (built here).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
n="${1:-2000}"
py="$FUSIONSTREAM_PYTHON"
backend="${BACKEND:-onnx:int8}"
export FUSIONSTREAM__MODEL__BACKEND="${backend%%:*}" FUSIONSTREAM__MODEL__PRECISION="${backend##*:}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
if [[ -z ${BINARY:-} ]]; then
  cargo build --release -p fusionstream --locked -q
  BINARY="$CARGO_TARGET_DIR/release/fusionstream"
fi
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
run="delivery-$$-$(date +%s)"
bucket="$run-media"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/make_events.py "$n" "$work/events.jsonl" "$bucket"
export INTERVALS="${INTERVALS:-100ms 500ms}"
"$py" - "$run" "$bucket" "$work/events.jsonl" <<'PY'
import os, sys, boto3
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
run, bucket, events = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
s3.create_bucket(Bucket=bucket)
for i in range(6):
    s3.upload_file(f"examples/media/scene{i}.png", bucket, f"scene{i}.png")
bootstrap = os.environ["FUSIONSTREAM_TEST_KAFKA"]
admin = AdminClient({"bootstrap.servers": bootstrap})
modes = ["at_least_once"] + [f"exactly_once-{i}" for i in os.environ["INTERVALS"].split()]
topics = [NewTopic(f"{run}.events", 3, 1)]
topics += [NewTopic(f"{run}.{m}.{s}", 1, 1) for m in modes
           for s in ("captions", "answers", "embeddings", "tags", "moderation", "dead_letters")]
for f in admin.create_topics(topics).values():
    f.result()
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
for i, line in enumerate(open(events).read().splitlines()):
    p.produce(f"{run}.events", key=str(i), value=line)
    p.poll(0)
assert p.flush(60) == 0
PY
counts() { # prefix
  "$py" - "$1" <<'PY'
import os, sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": os.environ["FUSIONSTREAM_TEST_KAFKA"], "group.id": "bench-counts",
              "isolation.level": "read_committed", "enable.auto.commit": False})
out = {}
for s in ("captions", "answers", "embeddings", "tags", "dead_letters"):
    tp = TopicPartition(f"{sys.argv[1]}.{s}", 0)
    lo, hi = c.get_watermark_offsets(tp, timeout=10)
    c.assign([TopicPartition(tp.topic, 0, lo)])
    k, deadline = 0, time.time() + 120
    while hi > lo and c.position([tp])[0].offset < hi and time.time() < deadline:
        k += sum(1 for m in c.consume(500, timeout=1) if m.error() is None)
    out[s] = k if hi <= lo or c.position([tp])[0].offset >= hi else f"{k} (unfinished: position {c.position([tp])[0].offset} < {hi})"
print("   records (read_committed):", out)
PY
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); backend $backend; binary $BINARY"
echo "events: $n (1/3 image+text+question all tasks, 1/3 image caption+embed+tag, 1/3 text only; images from S3)"
modes="at_least_once"
for i in $INTERVALS; do modes="$modes exactly_once:$i"; done
for mode in $modes; do
  delivery="${mode%%:*}"
  interval="${mode#*:}"
  [[ $interval == "$mode" ]] && interval=100ms
  tag="${mode//[:]/-}"  # the topics' names: at_least_once, exactly_once-100ms, …
  prefix="$run.$tag"
  echo "== fusionstream, kafka.delivery=$delivery$([[ $delivery == exactly_once ]] && echo ", transaction_interval=$interval")"
  FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
    FUSIONSTREAM__SOURCE__KIND=kafka FUSIONSTREAM__SINK__KIND=kafka \
    FUSIONSTREAM__KAFKA__DELIVERY="$delivery" FUSIONSTREAM__KAFKA__TRANSACTION_INTERVAL="$interval" \
    FUSIONSTREAM__KAFKA__TRANSACTIONAL_ID="$prefix-w" \
    FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS="$FUSIONSTREAM_TEST_KAFKA" \
    FUSIONSTREAM__KAFKA__GROUP_ID="$prefix" \
    FUSIONSTREAM__KAFKA__INPUT_TOPICS="[\"$run.events\"]" \
    FUSIONSTREAM__KAFKA__CAPTIONS_TOPIC="$prefix.captions" \
    FUSIONSTREAM__KAFKA__ANSWERS_TOPIC="$prefix.answers" \
    FUSIONSTREAM__KAFKA__EMBEDDINGS_TOPIC="$prefix.embeddings" \
    FUSIONSTREAM__KAFKA__TAGS_TOPIC="$prefix.tags" \
    FUSIONSTREAM__KAFKA__MODERATION_TOPIC="$prefix.moderation" \
    FUSIONSTREAM__KAFKA__DEAD_LETTERS_TOPIC="$prefix.dead_letters" \
    FUSIONSTREAM__S3__ENABLED=true FUSIONSTREAM__S3__ENDPOINT="$FUSIONSTREAM_TEST_S3_ENDPOINT" \
    FUSIONSTREAM__S3__FORCE_PATH_STYLE=true FUSIONSTREAM__S3__ALLOWED_BUCKETS="[\"$bucket\"]" \
    "$BINARY" run --max-events "$n" --json 2>/dev/null |
    "$py" -c 'import json,sys; s=json.load(sys.stdin); t=s["transactions"]; print(json.dumps({"finished": s["finished"], "seconds": round(s["seconds"],1), "events_per_second": round(s["events_per_second"],1), "latency_p50_ms": round(s["latency_p50_ms"],1), "latency_p99_ms": round(s["latency_p99_ms"],1), "transactions": t}))'
  counts "$prefix"
done
