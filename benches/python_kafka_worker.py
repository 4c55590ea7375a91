"""A straightforward Python Kafka worker doing the same job as a fusionstream worker on Kafka
and S3: confluent-kafka consumer in a group (manual commits after the outputs are
acknowledged: at-least-once), images fetched from S3 with boto3 and decoded with PIL, the
bundle's models with transformers (benches/python_worker.py: CLIP embeddings, match, tags,
fusion head, BLIP captions and answers) in micro-batches, outputs produced with an
idempotent acks=all producer and flushed before the commit. The baseline of
benches/compare_kafka.sh.

Usage (repository root):
  python benches/python_kafka_worker.py BOOTSTRAP GROUP INPUT_TOPIC OUT_PREFIX N [BATCH]
with S3 settings in FUSIONSTREAM_TEST_S3_ENDPOINT and the AWS_* variables. Stops after N
events; prints one JSON line: events, seconds, events_per_second, latency_p50_ms,
latency_p99_ms (read -> outputs acknowledged, per event)."""

import io
import json
import os
import sys
import time
from pathlib import Path

import boto3
from confluent_kafka import Consumer, Producer
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from python_worker import ALL, Models, percentiles  # noqa: E402


def main() -> None:
    bootstrap, group, topic, prefix, n = sys.argv[1:6]
    n = int(n)
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 32
    models = Models()
    s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    })
    consumer.subscribe([topic])
    done = 0
    latencies = []
    t_start = None
    while done < n:
        msgs = consumer.consume(num_messages=batch, timeout=0.1)
        if not msgs:
            continue
        t_read = time.perf_counter()
        if t_start is None:
            t_start = t_read
        evs, dead = [], []
        for m in msgs:
            if m.error():
                continue
            try:
                e = json.loads(m.value())
            except json.JSONDecodeError:
                dead.append({"reason": "malformed_json"})
                continue
            e.setdefault("tasks", ALL)
            e["img"] = None
            if "image" in e:
                try:
                    bucket, key = e["image"][len("s3://"):].split("/", 1)
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    e["img"] = Image.open(io.BytesIO(body)).convert("RGB")
                except Exception:
                    e["degraded"] = "image_unusable"
            evs.append(e)
        for stream, recs in models.run_batch(evs).items():
            for r in recs:
                producer.produce(f"{prefix}.{stream}", key=r["event_id"], value=json.dumps(r))
        for r in dead:
            producer.produce(f"{prefix}.dead_letters", value=json.dumps(r))
        if producer.flush(60) != 0:
            raise SystemExit("outputs not acknowledged")
        consumer.commit(asynchronous=False)
        now = time.perf_counter()
        latencies += [now - t_read] * len(msgs)
        done += len(msgs)
    seconds = time.perf_counter() - t_start
    consumer.close()
    p50, p99 = percentiles(latencies)
    print(json.dumps({"events": done, "seconds": round(seconds, 3),
                      "events_per_second": round(done / seconds, 1),
                      "latency_p50_ms": p50, "latency_p99_ms": p99}))


if __name__ == "__main__":
    main()
