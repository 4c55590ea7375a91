"""A straightforward Python backfill doing the job of `fusionstream backfill`: list an S3
prefix with boto3, fetch each object, decode with PIL and run the bundle's models with
transformers (embed, caption, tag: `python_worker.Models`) in batches, one JSONL file per
output stream. No checkpoint, no concurrency: the baseline of benches/compare_backfill.sh.

Usage (repository root): python benches/python_backfill.py BUCKET PREFIX OUT_DIR [BATCH]
(S3 endpoint from FUSIONSTREAM_TEST_S3_ENDPOINT). Prints one JSON line."""

import io
import json
import os
import sys
import time
from pathlib import Path

import boto3
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from python_worker import Models  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def main() -> None:
    bucket, prefix, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    out_dir.mkdir(parents=True, exist_ok=True)
    models = Models()
    s3 = boto3.client("s3", endpoint_url=os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"])
    files = {s: open(out_dir / f"{s}.jsonl", "w") for s in ["captions", "embeddings", "tags", "answers", "dead_letters"]}
    t_start = time.perf_counter()
    done = 0

    def flush(keys):
        evs = []
        for k in keys:
            e = {"id": k, "tasks": ["embed", "caption", "tag"], "img": None}
            try:
                body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                e["img"] = Image.open(io.BytesIO(body)).convert("RGB")
                evs.append(e)
            except Exception as err:  # an unusable object: dead letter, as fusionstream does
                files["dead_letters"].write(json.dumps({"event_id": k, "reason": type(err).__name__}) + "\n")
        for stream, recs in models.run_batch(evs).items():
            for r in recs:
                files[stream].write(json.dumps(r) + "\n")
        return len(keys)

    pending = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if o["Key"].lower().endswith(SUFFIXES):
                pending.append(o["Key"])
                if len(pending) == batch:
                    done += flush(pending)
                    pending = []
    if pending:
        done += flush(pending)
    for f in files.values():
        f.close()
    seconds = time.perf_counter() - t_start
    print(json.dumps({"objects": done, "seconds": round(seconds, 3), "objects_per_second": round(done / seconds, 1)}))


if __name__ == "__main__":
    main()
