"""Paced load and end-to-end latency through Kafka, for benches/compare_unsaturated.sh.

  python benches/kafka_paced.py produce BOOTSTRAP TOPIC EVENTS.jsonl RATE
      produce the events at RATE per second (evenly spaced), keyed by their line number;
  python benches/kafka_paced.py wait-group BOOTSTRAP GROUP
      wait until the consumer group has a member with partitions (the worker is ready);
  python benches/kafka_paced.py latency BOOTSTRAP INPUT_TOPIC OUT_PREFIX
      per event, the time from its input record's timestamp (the producer's create time) to
      the timestamp of each of its output records (the worker's producer's create time):
      prints one JSON line with p50/p99 of the event's last output and per stream.

Both workers are measured the same way, from outside: time waiting in the topic before a
worker reads an event counts too."""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

STREAMS = ("captions", "answers", "embeddings", "tags", "dead_letters")


def produce(bootstrap: str, topic: str, events: str, rate: float) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    lines = open(events).read().splitlines()
    start = time.perf_counter()
    for i, line in enumerate(lines):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.005))
        p.produce(topic, key=str(i), value=line)
        p.poll(0)
    assert p.flush(60) == 0
    print(json.dumps({"produced": len(lines), "seconds": round(time.perf_counter() - start, 2),
                      "rate": rate}))


def read_all(bootstrap: str, topic: str, partitions: int):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"paced-{time.time_ns()}",
                  "enable.auto.commit": False})
    ends = {}
    tps = []
    for p in range(partitions):
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        except Exception:
            break
        ends[p] = hi
        tps.append(TopicPartition(topic, p, lo))
    c.assign(tps)
    seen = {p: lo.offset for p, lo in zip(ends, tps)}
    while any(seen[p] < ends[p] for p in ends):
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        seen[m.partition()] = m.offset() + 1
        yield m
    c.close()


def wait_group(bootstrap: str, group: str) -> None:
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            g = admin.describe_consumer_groups([group])[group].result(10)
            if any(m.assignment.topic_partitions for m in g.members):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"group {group} never got partitions")


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[round((len(xs) - 1) * p)], 1) if xs else None


def latency(bootstrap: str, input_topic: str, prefix: str) -> None:
    sent = {}
    for m in read_all(bootstrap, input_topic, 3):
        sent[json.loads(m.value())["id"]] = m.timestamp()[1]
    last = {}
    per_stream = {s: [] for s in STREAMS}
    for s in STREAMS:
        first = {}
        for m in read_all(bootstrap, f"{prefix}.{s}", 1):
            eid = json.loads(m.value()).get("event_id")
            if eid in sent and eid not in first:
                first[eid] = m.timestamp()[1] - sent[eid]
        per_stream[s] = list(first.values())
        for eid, ms in first.items():
            last[eid] = max(last.get(eid, 0), ms)
    out = {"events": len(sent), "with_outputs": len(last),
           "p50_ms": pct(list(last.values()), 0.5), "p99_ms": pct(list(last.values()), 0.99)}
    for s, xs in per_stream.items():
        if xs:
            out[s] = {"records": len(xs), "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99)}
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif sys.argv[1] == "wait-group":
        wait_group(sys.argv[2], sys.argv[3])
    else:
        latency(sys.argv[2], sys.argv[3], sys.argv[4])
