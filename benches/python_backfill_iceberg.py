"""The Python peer of `fusionstream backfill --sink lake`: the job of
benches/python_backfill.py (boto3 list + get, PIL, the bundle's models with transformers in
batches), but its records go to Apache Iceberg tables through the REST catalog with pyiceberg
(one table per stream, schema inferred by pyarrow from the records, an append per stream
every COMMIT objects and at the end) — what a data team would write by hand.

Usage (repository root): python benches/python_backfill_iceberg.py BUCKET PREFIX NAMESPACE
[BATCH] [COMMIT]   (S3 endpoint FUSIONSTREAM_TEST_S3_ENDPOINT, catalog
FUSIONSTREAM_TEST_ICEBERG_URI). Prints one JSON line."""

import io
import json
import os
import sys
import time
from pathlib import Path

import boto3
import pyarrow as pa
from PIL import Image
from pyiceberg.catalog import load_catalog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from python_worker import Models  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def main() -> None:
    bucket, prefix, ns = sys.argv[1], sys.argv[2], sys.argv[3]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    every = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    endpoint = os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"]
    cat = load_catalog(
        "rest",
        **{
            "type": "rest",
            "uri": os.environ["FUSIONSTREAM_TEST_ICEBERG_URI"],
            "s3.endpoint": endpoint,
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3.path-style-access": "true",
        },
    )
    cat.create_namespace_if_not_exists(ns)
    models = Models()
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pending_rows: dict[str, list] = {}
    tables = {}
    t_start = time.perf_counter()
    done = 0
    rows = 0

    def commit():
        nonlocal rows
        for stream, recs in pending_rows.items():
            if not recs:
                continue
            data = pa.Table.from_pylist(recs)
            if stream not in tables:
                tables[stream] = cat.create_table_if_not_exists(f"{ns}.{stream}", schema=data.schema)
            tables[stream].append(data)
            rows += len(recs)
        pending_rows.clear()

    def run(keys):
        evs = []
        for k in keys:
            e = {"id": k, "tasks": ["embed", "caption", "tag"], "img": None}
            try:
                body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                e["img"] = Image.open(io.BytesIO(body)).convert("RGB")
                evs.append(e)
            except Exception as err:  # an unusable object: dead letter
                pending_rows.setdefault("dead_letters", []).append({"event_id": k, "reason": type(err).__name__})
        for stream, recs in models.run_batch(evs).items():
            pending_rows.setdefault(stream, []).extend(recs)
        return len(keys)

    keys = []
    since = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if o["Key"].lower().endswith(SUFFIXES):
                keys.append(o["Key"])
                if len(keys) == batch:
                    n = run(keys)
                    done += n
                    since += n
                    keys = []
                    if since >= every:
                        commit()
                        since = 0
    if keys:
        done += run(keys)
    commit()
    seconds = time.perf_counter() - t_start
    print(json.dumps({"objects": done, "rows": rows, "seconds": round(seconds, 3), "objects_per_second": round(done / seconds, 1)}))


if __name__ == "__main__":
    main()
