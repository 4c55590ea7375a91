"""Smoke test of the fusionstream image, run as the Helm chart runs it (scripts/test-image.sh).

The image is pulled from a registry on 127.0.0.1 (scripts/test-image.sh pushed it there) into an
empty store and checked to be the image built and archived; every run goes
through scripts/image-run.sh: the chart's uid/gid, a read-only root, the chart's volumes (its
rendered ConfigMap read-only at /etc/fusionstream, emptyDirs at /tmp and /var/cache/fusionstream),
the image's environment followed by the chart's (secretKeyRef values resolved as the kubelet
would), the image's entrypoint with the chart's args. Checks, in order:

1. the chart's defaults point at this image (repository, tag = crate version);
2. `fusionstream config` accepts the chart's shipped configuration;
3. the embedded default (the image's own CMD) and the moderation example on the packs baked
   into the image write the same outputs as the same binary run outside the image, into a
   writable volume;
4. a Kafka worker on the dev services (Kafka and MinIO on 127.0.0.1) with a chart rendered for
   them: /healthz, /readyz and /metrics answer, every event produced gets its outputs (images
   from S3 included), SIGTERM drains and exits 0 within the chart's grace period, and the
   group's committed offsets reach the end of the input.

Usage: python scripts/image_smoke.py ARCHIVE IMAGE_REF HELM REMOTE (from the repository root,
as root, with the environment of `scripts/dev-services.sh env`; REMOTE: registry/name:tag).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid

import yaml

ARCHIVE, IMAGE_REF, HELM, REMOTE = sys.argv[1:5]
BOOTSTRAP = os.environ["FUSIONSTREAM_TEST_KAFKA"]
S3_ENDPOINT = os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"]
CHART = "helm/fusionstream"
STREAMS = ["captions", "answers", "embeddings", "tags", "moderation", "dead_letters"]
RUN = f"image-smoke-{uuid.uuid4().hex[:8]}"
WORK = tempfile.mkdtemp(prefix="image-smoke-")


def log(msg):
    print(f"image-smoke: {msg}", flush=True)


# An empty image store, as on a node that has never pulled the image.
STORE = ["--root", os.path.join(WORK, "store"), "--runroot", os.path.join(WORK, "store-run")]


def buildah(*args, store=()):
    return subprocess.run(["buildah", "--storage-driver", "vfs", *store, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def archive_image_id(path):
    """The image ID (config digest) of the single image in an OCI archive."""
    with tarfile.open(path) as t:
        def blob(digest):
            return json.load(t.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}"))
        (manifest,) = json.load(t.extractfile("index.json"))["manifests"]
        return blob(manifest["digest"])["config"]["digest"].split(":", 1)[1]


def crate_version():
    for line in open("Cargo.toml"):
        if line.startswith("version = "):
            return line.split('"')[1]
    raise SystemExit("no version in Cargo.toml")


def render(*args):
    out = subprocess.run([HELM, "template", "fs", CHART, "--namespace", "media", *args],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    return deployment, configmap


class Pod:
    """The chart's worker container, resolved into an image-run.sh command line."""

    def __init__(self, root, image_config, deployment, configmap, secrets):
        spec = deployment["spec"]["template"]["spec"]
        self.container = spec["containers"][0]
        sec = spec["securityContext"]
        assert self.container["securityContext"]["readOnlyRootFilesystem"] is True
        self.user = f"{sec['runAsUser']}:{sec['runAsGroup']}"
        self.fs_group = sec["fsGroup"]
        self.grace = spec["terminationGracePeriodSeconds"]
        self.root, self.image_config = root, image_config
        # Volumes: the ConfigMap's files in a folder, emptyDirs as fresh folders (fsGroup-owned).
        self.mounts = []
        volumes = {v["name"]: v for v in spec["volumes"]}
        for m in self.container["volumeMounts"]:
            host = tempfile.mkdtemp(prefix=f"{m['name']}-", dir=WORK)
            v = volumes[m["name"]]
            if "configMap" in v:
                for name, text in configmap["data"].items():
                    with open(os.path.join(host, name), "w") as f:
                        f.write(text)
                os.chmod(host, 0o755)
            else:
                assert "emptyDir" in v, v
                os.chown(host, 0, self.fs_group)
                os.chmod(host, 0o2775)
            self.mounts.append(f"{host}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}")
        # Environment: the image's, then the container's (later wins, as in Kubernetes).
        self.env = list(image_config["Env"])
        for e in self.container.get("env", []):
            if "value" in e:
                self.env.append(f"{e['name']}={e['value']}")
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                self.env.append(f"{e['name']}={secrets[ref['name']][ref['key']]}")

    def command(self, args=None, extra_env=(), extra_mounts=()):
        cmd = ["scripts/image-run.sh", self.root, "--user", self.user,
               "--workdir", self.image_config["WorkingDir"]]
        for m in [*self.mounts, *extra_mounts]:
            cmd += ["-v", m]
        for e in [*self.env, *extra_env]:
            cmd += ["-e", e]
        args = self.container["args"] if args is None else args
        return cmd + ["--", *self.image_config["Entrypoint"], *args]


def pid1_of(proc):
    """The host pid of the container's PID 1 (the only child of image-run.sh's unshare)."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return int(f.read().split()[0])


def kill_pod(proc):
    """SIGKILL to the container's PID 1 ends every process of its namespace."""
    try:
        os.kill(pid1_of(proc), 9)
    except (OSError, IndexError, ValueError):
        pass
    proc.kill()
    proc.wait()


def run_pod(cmd, timeout):
    """Runs a container to its end; on timeout, kills it (all of it) and fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_pod(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def outputs_by_stream(folder):
    """Per stream: each record's event (its id, or its input position) and what it says."""
    found = {}
    for s in STREAMS:
        path = os.path.join(folder, f"{s}.jsonl")
        recs = []
        if os.path.exists(path):
            for line in open(path):
                rec = json.loads(line)
                src = rec["source"]
                key = rec["event_id"] or f"{src['stream']}:{src['offset']}"
                said = (rec.get("caption") or rec.get("answer") or rec.get("decision")
                        or rec.get("reason") or "")
                recs.append((key, said, sorted(rec.get("degraded", []))))
        found[s] = sorted(recs)
    return found


def check_local_run(pod, image_root, what, args, streams):
    """A local run in the image (outputs into a volume) against the same binary, ONNX Runtime
    library, packs and files run outside it: the same records."""
    out = tempfile.mkdtemp(prefix="out-", dir=WORK)
    os.chown(out, *map(int, pod.user.split(":")))
    r = run_pod(pod.command([*args, "--out", "/var/lib/fusionstream/out"],
                            extra_mounts=[f"{out}:/var/lib/fusionstream/out"]), 300)
    assert r.returncode == 0, f"{what} exited {r.returncode}:\n{r.stderr[-4000:]}"
    assert "fusionstream run: completed" in r.stderr + r.stdout, r.stderr[-2000:]
    inside = outputs_by_stream(out)
    host_out = tempfile.mkdtemp(prefix="host-out-", dir=WORK)
    env = {"PATH": os.environ["PATH"],
           "ORT_DYLIB_PATH": f"{image_root}/usr/lib/fusionstream/libonnxruntime.so",
           "FUSIONSTREAM_PACKS": f"{image_root}/usr/share/fusionstream/packs"}
    r2 = subprocess.run([f"{image_root}/usr/local/bin/fusionstream", *args, "--out", host_out],
                        cwd=f"{image_root}/usr/share/fusionstream", env=env,
                        capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-4000:]
    outside = outputs_by_stream(host_out)
    assert inside == outside, f"outputs differ:\n{inside}\n{outside}"
    assert all(inside[s] for s in streams), inside
    counts = {s: len(v) for s, v in inside.items() if v}
    log(f"{what} in the image: {counts}, equal to the same binary outside it")


def upload_scenes(bucket, n):
    import boto3
    s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    keys = []
    for i in range(n):
        key = f"scenes/scene{i}.png"
        s3.upload_file(f"examples/media/scene{i}.png", bucket, key)
        keys.append(key)
    return keys


def check_kafka_worker(image_config, root, secrets_env):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bucket = RUN
    keys = upload_scenes(bucket, 4)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topics = [NewTopic(f"{RUN}.events", 2, 1)] + [NewTopic(f"{RUN}.{s}", 1, 1) for s in STREAMS]
    for f in admin.create_topics(topics).values():
        f.result()
    port = free_port()
    config = f"""
[source]
kind = "kafka"

[sink]
kind = "kafka"

[kafka]
bootstrap_servers = "{BOOTSTRAP}"
input_topics = ["{RUN}.events"]
group_id = "{RUN}-workers"
session_timeout = "6s"
{chr(10).join(f'{s}_topic = "{RUN}.{s}"' for s in STREAMS)}

[s3]
enabled = true
endpoint = "{S3_ENDPOINT}"
force_path_style = true
allowed_buckets = ["{bucket}"]

[model]
device = "cpu"

[telemetry]
log_format = "json"
"""
    cfg = os.path.join(WORK, "kafka-config.toml")
    with open(cfg, "w") as f:
        f.write(config)
    values = os.path.join(WORK, "kafka-values.yaml")
    with open(values, "w") as f:
        yaml.safe_dump({
            "image": {"variant": "cpu"},
            "metricsPort": port,
            "secretEnv": [
                {"name": "AWS_ACCESS_KEY_ID", "secretName": "minio", "secretKey": "user"},
                {"name": "AWS_SECRET_ACCESS_KEY", "secretName": "minio", "secretKey": "password"},
            ],
            "env": [{"name": "AWS_REGION", "value": "us-east-1"}],
        }, f)
    deployment, configmap = render("-f", values, "--set-file", f"config={cfg}")
    pod = Pod(root, image_config, deployment, configmap, secrets_env)

    events = []
    for i in range(12):
        e = {"id": f"{RUN}-{i}", "text": "a large red cross on the right"}
        if i % 3 != 2:
            e["image"] = f"s3://{bucket}/{keys[i % len(keys)]}"
        if i % 2 == 0:
            e["question"] = "what colour is the cross ?"
        events.append(e)
    events.append({"id": f"{RUN}-poison"})  # nothing usable: a dead letter

    logf = open(os.path.join(WORK, "kafka-worker.log"), "w+")
    worker = subprocess.Popen(pod.command(), stdout=logf, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while http_get(f"{base}/healthz")[0] != 200:
            assert worker.poll() is None and time.time() < deadline, "no /healthz"
            time.sleep(0.2)
        p = Producer({"bootstrap.servers": BOOTSTRAP})
        for i, e in enumerate(events):
            p.produce(f"{RUN}.events", key=str(i), value=json.dumps(e))
        assert p.flush(30) == 0
        while http_get(f"{base}/readyz")[0] != 200:
            assert worker.poll() is None and time.time() < deadline + 60, "never ready"
            time.sleep(0.2)
        # Read every output topic until each event has its outputs or its dead letter.
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{RUN}-reader",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([f"{RUN}.{s}" for s in STREAMS])
        seen = {s: set() for s in STREAMS}
        want = {e["id"] for e in events}
        deadline = time.time() + 120
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                done = set().union(*(seen[s] for s in ["embeddings", "dead_letters"]))
                if done >= want and len(seen["captions"]) >= 8 and len(seen["answers"]) >= 4:
                    break
                continue
            rec = json.loads(m.value())
            seen[m.topic().rsplit(".", 1)[1]].add(rec.get("event_id"))
        c.close()
        counts = {s: len(v) for s, v in seen.items()}
        assert seen["dead_letters"] == {f"{RUN}-poison"}, counts
        assert seen["embeddings"] == want - {f"{RUN}-poison"}, counts
        # Captions for the 8 events with an S3 image, answers for the 4 of them with a question.
        assert len(seen["captions"]) == 8 and len(seen["answers"]) == 4, counts
        status, metrics = http_get(f"{base}/metrics")
        assert status == 200 and "fusionstream_events_total" in metrics, metrics[:500]
        log(f"kafka worker in the image: outputs {counts}; /healthz, /readyz, /metrics answer")
        t0 = time.time()
        # The kubelet's SIGTERM: to the container's PID 1, the worker itself.
        os.kill(pid1_of(worker), 15)
        rc = worker.wait(timeout=pod.grace)
        took = time.time() - t0
        assert rc == 0, f"SIGTERM: exit {rc}"
        log(f"SIGTERM: drained and exited 0 in {took:.1f} s (grace {pod.grace} s)")
    except BaseException:
        kill_pod(worker)
        logf.seek(0)
        print(logf.read()[-6000:], file=sys.stderr)
        raise
    # Offsets: committed up to the end of each input partition.
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{RUN}-workers"})
    parts = [TopicPartition(f"{RUN}.events", p) for p in range(2)]
    committed = c.committed(parts, timeout=10)
    for tp in committed:
        _, high = c.get_watermark_offsets(tp, timeout=10)
        assert tp.offset == high, f"partition {tp.partition}: committed {tp.offset}, end {high}"
    c.close()
    log("committed offsets reach the end of every input partition")


def main():
    version = crate_version()
    # The image as a node gets it: pulled from the registry into an empty store; the same image
    # (config digest) as the OCI archive and the local build.
    ctr = buildah("from", "--tls-verify=false", f"docker://{REMOTE}", store=STORE)
    try:
        pulled = json.loads(buildah("inspect", "--type", "container", ctr, store=STORE))
        built = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", IMAGE_REF)
        archived = archive_image_id(ARCHIVE)
        assert pulled["FromImageID"] == built == archived, (pulled["FromImageID"], built, archived)
        log(f"pulled {REMOTE} into an empty store: image {built[:12]}, as built and archived")
        root = buildah("mount", ctr, store=STORE)
        image_config = pulled["OCIv1"]["config"]
        labels = image_config["Labels"]
        assert labels["org.opencontainers.image.version"] == version, labels
        assert image_config["User"] == "65532:65532", image_config["User"]
        # The SBOM and ONNX Runtime's licence travel in the image.
        bom = json.load(open(f"{root}/usr/share/doc/fusionstream/sbom.cdx.json"))
        names = {c["name"] for c in bom["components"]}
        assert {"rdkafka", "candle-core", "ort", "aws-sdk-s3"} <= names, len(names)
        assert os.path.getsize(f"{root}/usr/share/doc/fusionstream/onnxruntime-LICENSE") > 0

        # 1. The chart's defaults point at this image.
        deployment, configmap = render("--set", "image.variant=cpu")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == f"fusionstream:{version}", image
        assert IMAGE_REF in (image, f"localhost/{image}"), (IMAGE_REF, image)
        cuda_image = render()[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert cuda_image == f"fusionstream:{version}-cuda", cuda_image
        log(f"chart defaults: {cuda_image} (GPU workers), {image} with image.variant=cpu")

        # 2. `fusionstream config` on the chart's shipped configuration. Its defaults run on a GPU;
        # this is the CPU image, so the device is overridden (every other key as shipped).
        pod = Pod(root, image_config, deployment, configmap, {})
        r = run_pod(pod.command(["config", "--config", "/etc/fusionstream/config.toml"],
                                extra_env=["FUSIONSTREAM__MODEL__DEVICE=cpu"]), 60)
        assert r.returncode == 0, r.stderr
        assert 'bootstrap_servers = "kafka:9092"' in r.stdout, r.stdout[:2000]
        log("fusionstream config: the chart's configuration is valid in the image")

        # 3. The embedded default: the image's own CMD, as
        # `docker run -v $PWD/out:/var/lib/fusionstream/out IMAGE`.
        cmd = image_config["Cmd"]
        assert cmd[-2:] == ["--out", "/var/lib/fusionstream/out"], cmd
        check_local_run(pod, root, "the embedded default", cmd[:-2],
                        ["captions", "answers", "embeddings", "tags", "dead_letters"])
        # The moderation example on the packs baked into this image (--packs).
        check_local_run(pod, root, "moderation with the baked packs",
                        ["run", "--config", "config/moderation.toml"], ["moderation"])

        # 4. A Kafka worker on the dev services.
        secrets = {"minio": {"user": os.environ["AWS_ACCESS_KEY_ID"],
                             "password": os.environ["AWS_SECRET_ACCESS_KEY"]}}
        check_kafka_worker(image_config, root, secrets)
    finally:
        subprocess.run(["buildah", "--storage-driver", "vfs", *STORE, "rm", ctr],
                       capture_output=True)
        subprocess.run(["buildah", "--storage-driver", "vfs", *STORE, "rmi", "--all"],
                       capture_output=True)
        shutil.rmtree(WORK, ignore_errors=True)
    log("passed")


if __name__ == "__main__":
    main()
