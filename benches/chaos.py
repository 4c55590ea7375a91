"""Chaos soak (run by benches/chaos.sh): N events with S3 images through Kafka while the
worker is SIGKILLed at random, the broker restarts, MinIO goes away for a while and poison
items sit in the stream; then every output topic is read back and the event accounting is
printed (and written as JSON).

A supervisor restarts the worker whenever it exits, as Kubernetes would (no back-off).

Usage: python benches/chaos.py BINARY N KILLS BROKER_RESTARTS MINIO_DOWN_S OUT.json
Needs the dev services up (FUSIONSTREAM_TEST_KAFKA, FUSIONSTREAM_TEST_S3_ENDPOINT, AWS_*)."""

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import boto3
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

STREAMS = ("captions", "answers", "embeddings", "tags", "dead_letters")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def services(verb, name):
    subprocess.run([os.path.join(ROOT, "scripts/dev-services.sh"), verb, name],
                   check=True, stdout=subprocess.DEVNULL)


def make_events(n, bucket, rng):
    """The stream: mostly image + text events (embed, tag), some captions and questions,
    a few text-only, and poison items at fixed places."""
    events = []
    poison = {}
    kinds = {n // 7: "abort", (3 * n) // 7: "abort", (5 * n) // 7: "abort"}
    for k, at in enumerate(range(n // 11, n, n // 9)):
        kinds.setdefault(at, ("model-error", "model-panic", "nan-output", "preprocess-panic")[k % 4])
    for k, at in enumerate(range(n // 13, n, n // 6)):
        kinds.setdefault(at, "malformed")
    for i in range(n):
        scene = f"s3://{bucket}/scene{i % 24}.png"
        e = {"id": f"c-{i:06d}", "image": scene, "text": "a small red circle at the top",
             "tasks": ["embed", "tag"]}
        if i % 20 == 0:
            e["tasks"] = ["caption", "embed"]
        elif i % 20 == 10:
            e["question"] = "what colour is the circle ?"
            e["tasks"] = ["answer"]
        elif i % 20 == 5:
            del e["image"]
            e["tasks"] = ["embed"]
        elif i % 20 == 15:
            e["image"] = f"s3://{bucket}/missing-{i}.png"  # degrades: image_not_found
        kind = kinds.get(i)
        if kind == "malformed":
            line = '{"id": "c-%06d", "text": ' % i  # cut JSON: malformed_json
        else:
            if kind:
                e["id"] += f"@fault:{kind}"
            line = json.dumps(e)
        if kind:
            poison[e["id"] if kind != "malformed" else f"c-{i:06d}"] = kind
        events.append((e["id"] if kind != "malformed" else f"c-{i:06d}", line))
    return events, poison


class Worker:
    """The supervised worker: restarted whenever it exits; its peak RSS sampled."""

    def __init__(self, binary, env, logdir):
        self.binary, self.env, self.logdir = binary, env, logdir
        self.proc = None
        self.starts = 0
        self.kills = 0
        self.exits = collections.Counter()
        self.peak_rss = 0
        self.bound = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.supervise, daemon=True)

    def spawn(self):
        self.starts += 1
        logf = open(os.path.join(self.logdir, f"worker-{self.starts:03d}.log"), "w")
        self.proc = subprocess.Popen([self.binary, "run", "--json"], env=self.env, cwd=ROOT,
                                     stdout=logf, stderr=subprocess.STDOUT)

    def supervise(self):
        with self.lock:
            self.spawn()
        while not self.stop.is_set():
            with self.lock:
                p = self.proc
                rc = p.poll()
                if rc is not None and not self.stop.is_set():
                    self.exits["SIGKILL" if rc == -9 else "SIGABRT" if rc == -6 else f"exit {rc}"] += 1
                    self.spawn()
                    continue
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            except OSError:
                pass
            time.sleep(0.2)

    def kill(self):
        """SIGKILL the running worker (waiting for the supervisor's restart if it is between
        lives)."""
        deadline = time.time() + 60
        while time.time() < deadline:
            with self.lock:
                if self.proc and self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGKILL)
                    self.kills += 1
                    return True
            time.sleep(0.1)
        return False

    def finish(self):
        """SIGTERM the current worker and wait for its clean exit."""
        self.stop.set()
        self.thread.join()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        self.exits[f"exit {rc} (final SIGTERM)"] += 1
        return rc

    def memory_bound(self):
        for name in sorted(os.listdir(self.logdir)):
            text = open(os.path.join(self.logdir, name), errors="replace").read()
            m = re.search(r"memory bound.*?bound=(\d+) MiB", text)
            if m:
                return int(m.group(1)) << 20
        return None


def committed(consumer, topic, partitions):
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


def read_all(bootstrap, prefix):
    # read_committed, as downstream consumers of an exactly-once worker must: records of
    # aborted transactions are skipped. Read to the end by position (transaction markers take
    # offsets and are never delivered).
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-reader", "log_level": 0,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    out = {}
    for s in STREAMS:
        topic = f"{prefix}.{s}"
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, lo)])
        recs = []
        deadline = time.time() + 300
        while hi > lo and c.position([TopicPartition(topic, 0)])[0].offset < hi:
            if time.time() > deadline:
                raise SystemExit(f"could not read {topic} to its end ({hi})")
            for m in c.consume(500, timeout=1):
                if m.error() is None:
                    recs.append(json.loads(m.value()))
        out[s] = recs
    c.close()
    return out


def main():
    binary, n, kills, restarts, minio_down, out_json = sys.argv[1:7]
    n, kills, restarts, minio_down = int(n), int(kills), int(restarts), float(minio_down)
    rng = random.Random(20261201)
    bootstrap = os.environ["FUSIONSTREAM_TEST_KAFKA"]
    run = f"chaos-{os.getpid()}-{int(time.time())}"
    bucket = f"{run}-media"
    s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
    s3.create_bucket(Bucket=bucket)
    for i in range(24):
        s3.upload_file(os.path.join(ROOT, f"examples/media/scene{i % 6}.png"), bucket, f"scene{i}.png")
    partitions = 3
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(f"{run}.events", partitions, 1)]
    topics += [NewTopic(f"{run}.{s}", 1, 1) for s in STREAMS]
    for f in admin.create_topics(topics).values():
        f.result()
    events, poison = make_events(n, bucket, rng)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, (_, line) in enumerate(events):
        p.produce(f"{run}.events", key=str(i), value=line)
        p.poll(0)
    assert p.flush(60) == 0
    del p  # an idle producer would log every failed reconnect during the broker restarts
    log(f"{n} events produced to {run}.events ({len(poison)} poison items: "
        f"{dict(collections.Counter(poison.values()))})")

    env = dict(os.environ)
    env.update({
        "FUSIONSTREAM_TEST_FAULTS": "1",
        "FUSIONSTREAM__TELEMETRY__PROGRESS": "never",
        "FUSIONSTREAM__SOURCE__KIND": "kafka", "FUSIONSTREAM__SINK__KIND": "kafka",
        "FUSIONSTREAM__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "FUSIONSTREAM__KAFKA__GROUP_ID": f"{run}-workers",
        "FUSIONSTREAM__KAFKA__INPUT_TOPICS": f'["{run}.events"]',
        "FUSIONSTREAM__KAFKA__SESSION_TIMEOUT": "6s",
        "FUSIONSTREAM__S3__ENABLED": "true",
        "FUSIONSTREAM__S3__ENDPOINT": os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"],
        "FUSIONSTREAM__S3__FORCE_PATH_STYLE": "true",
    })
    for s in STREAMS:
        env[f"FUSIONSTREAM__KAFKA__{s.upper()}_TOPIC"] = f"{run}.{s}"
    # DELIVERY=exactly_once: one transactional id across restarts (as a StatefulSet gives),
    # and any duplicate fails the run.
    delivery = os.environ.get("DELIVERY", "at_least_once")
    env["FUSIONSTREAM__KAFKA__DELIVERY"] = delivery
    if delivery == "exactly_once":
        env["FUSIONSTREAM__KAFKA__TRANSACTIONAL_ID"] = f"{run}-worker-0"
    logdir = tempfile.mkdtemp(prefix="chaos-logs-")
    w = Worker(binary, env, logdir)
    started = time.time()
    w.thread.start()

    # The chaos schedule: kills at random gaps, the broker restarts and the MinIO outage
    # placed among them.
    plan = ["kill"] * kills + ["broker"] * restarts + ["minio"]
    rng.shuffle(plan)
    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{run}-workers",
                        "log_level": 0})
    done_at = None
    timeline = []
    for step in plan:
        time.sleep(rng.uniform(3, 9))
        done = committed(watcher, f"{run}.events", partitions)
        if step == "kill":
            w.kill()
        elif step == "broker":
            services("stop", "kafka")
            time.sleep(rng.uniform(2, 6))
            services("start", "kafka")
        else:
            services("stop", "minio")
            time.sleep(minio_down)
            services("start", "minio")
        timeline.append((round(time.time() - started, 1), step, done))
        log(f"{step:6s} at {time.time() - started:6.1f}s; committed {done}/{n}")
    chaos_end = time.time() - started
    while True:
        try:
            done = committed(watcher, f"{run}.events", partitions)
        except Exception as e:  # the coordinator may still be moving
            log(f"committed offsets unreadable: {e}")
            done = 0
        if done >= n:
            done_at = time.time() - started
            break
        if time.time() - started > 3600:
            log("gave up after an hour")
            break
        time.sleep(2)
    rc = w.finish()
    log(f"all {n} offsets committed at {done_at}s; final worker exit {rc}")
    watcher.close()

    outputs = read_all(bootstrap, run)
    by_payload = {line: eid for eid, line in events}
    seen = collections.defaultdict(collections.Counter)
    reasons = collections.Counter()
    dl_of = {}
    for s, recs in outputs.items():
        for r in recs:
            eid = r.get("event_id")
            if s == "dead_letters":
                if eid is None:
                    eid = by_payload.get(r.get("payload"), None)
                dl_of[eid] = r["reason"]
            seen[eid][s] += 1
    reasons = collections.Counter(dl_of.values())  # per event, not per record
    ids = [eid for eid, _ in events]
    lost = [i for i in ids if i not in seen]
    dups = sum(c - 1 for per in seen.values() for c in per.values() if c > 1)
    dup_events = sum(1 for i in ids if any(c > 1 for c in seen.get(i, {}).values()))
    wrong = {i: (poison[i], dl_of.get(i)) for i in poison
             if i in dl_of and dl_of[i] not in {"abort": {"poison_suspected"},
                                                 "model-error": {"model_error"},
                                                 "model-panic": {"internal_error"},
                                                 "nan-output": {"model_error"},
                                                 "preprocess-panic": {"internal_error"},
                                                 "malformed": {"malformed_json"}}[poison[i]]}
    innocent = [i for i, r in dl_of.items() if r == "poison_suspected" and i not in poison]
    result = {
        "delivery": delivery,
        "events": n,
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicate_records": dups,
        "events_with_duplicates": dup_events,
        "dead_letters_by_reason": dict(reasons),
        "degraded_events": len({r["event_id"] for s in ("embeddings", "tags", "captions", "answers")
                                for r in outputs[s] if r.get("degraded")}),
        "poison_items": dict(collections.Counter(poison.values())),
        "poison_with_unexpected_reason": wrong,
        "poison_not_dead_lettered": [i for i in poison if i not in dl_of],
        "innocent_poison_suspected": innocent,
        "records_per_stream": {s: len(r) for s, r in outputs.items()},
        "worker_starts": w.starts,
        "worker_exits": dict(w.exits),
        "sigkills_landed": w.kills,
        "broker_restarts": restarts,
        "minio_down_seconds": minio_down,
        "chaos_seconds": round(chaos_end, 1),
        "all_committed_seconds": round(done_at, 1) if done_at else None,
        "peak_rss_mib": w.peak_rss >> 20,
        "memory_bound_mib": (w.memory_bound() or 0) >> 20,
        "timeline": timeline,
        "logs": logdir,
    }
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    duplicates_ok = delivery != "exactly_once" or dups == 0
    sys.exit(0 if not lost and not wrong and rc == 0 and duplicates_ok else 1)


if __name__ == "__main__":
    main()
