"""Independent readers of the lake sink's tables for tests/lake.rs.

    lake_read.py iceberg NAMESPACE      every table of NAMESPACE through the REST catalog
                                        (pyiceberg): rows, event ids, snapshot summaries
    lake_read.py parquet ROOT           the Parquet files the manifests under ROOT list
                                        (pyarrow): rows, event ids; files no manifest lists
    lake_read.py create-old NAMESPACE   an older `captions` table (fewer columns) with one row,
                                        for the schema-evolution test

Endpoints from the environment of scripts/dev-services.sh. Prints one JSON object.
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

STREAMS = ["captions", "answers", "embeddings", "tags", "moderation", "dead_letters"]


def catalog():
    from pyiceberg.catalog import load_catalog

    return load_catalog(
        "rest",
        **{
            "type": "rest",
            "uri": os.environ["FUSIONSTREAM_TEST_ICEBERG_URI"],
            "s3.endpoint": os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"],
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3.path-style-access": "true",
        },
    )


def s3fs():
    endpoint = os.environ["FUSIONSTREAM_TEST_S3_ENDPOINT"]
    scheme, host = endpoint.split("://", 1)
    return pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )


def iceberg(ns):
    cat = catalog()
    out = {}
    for s in STREAMS:
        try:
            t = cat.load_table(f"{ns}.{s}")
        except Exception:  # noqa: BLE001 - a table never created
            continue
        rows = t.scan().to_arrow()
        snaps = [dict(x.summary.additional_properties) for x in t.snapshots()]
        out[s] = {
            "rows": rows.num_rows,
            "event_ids": [e for e in rows.column("event_id").to_pylist()],
            "columns": rows.column_names,
            "snapshots": snaps,
            "files": sorted(f.file.file_path for f in t.scan().plan_files()),
            "sample": rows.slice(0, 1).to_pylist()[0] if rows.num_rows else None,
        }
    return out


def parquet(root):
    fs = s3fs()
    base = root.removeprefix("s3://").rstrip("/")
    manifests = [
        f.path
        for f in fs.get_file_info(pafs.FileSelector(base + "/_manifests", recursive=True))
        if f.path.endswith(".json")
    ]
    listed = {}
    for m in sorted(manifests):
        with fs.open_input_stream(m) as f:
            rec = json.loads(f.read())
        for stream, files in rec["files"].items():
            for e in files:
                listed.setdefault(stream, []).append(e)
    all_files = [
        f.path
        for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
        if f.path.endswith(".parquet")
    ]
    out = {"manifests": len(manifests), "unlisted": 0, "streams": {}}
    listed_paths = {e["path"].removeprefix("s3://") for es in listed.values() for e in es}
    out["unlisted"] = len([p for p in all_files if p not in listed_paths])
    for stream, entries in listed.items():
        tables = [pq.read_table(e["path"].removeprefix("s3://"), filesystem=fs) for e in entries]
        t = pa.concat_tables(tables, promote_options="default")
        assert sum(e["rows"] for e in entries) == t.num_rows, "manifest row counts"
        out["streams"][stream] = {
            "rows": t.num_rows,
            "event_ids": t.column("event_id").to_pylist(),
            "files": [e["path"] for e in entries],
            "dts": sorted({e["dt"] for e in entries}),
        }
    return out


def create_old(ns):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import NestedField, StringType, StructType, TimestamptzType

    cat = catalog()
    cat.create_namespace_if_not_exists(ns)
    schema = Schema(
        NestedField(1, "event_id", StringType(), required=True),
        NestedField(
            2,
            "timings",
            StructType(NestedField(3, "received_at", TimestamptzType(), required=False)),
            required=False,
        ),
    )
    spec = PartitionSpec(PartitionField(3, 1000, DayTransform(), "received_at_day"))
    t = cat.create_table(f"{ns}.captions", schema=schema, partition_spec=spec)
    import datetime

    row = pa.table(
        {
            "event_id": pa.array(["old-row"], pa.string()),
            "timings": pa.array(
                [{"received_at": datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)}],
                pa.struct([("received_at", pa.timestamp("us", tz="UTC"))]),
            ),
        },
        schema=t.schema().as_arrow(),
    )
    t.append(row)
    return {"created": f"{ns}.captions"}


if __name__ == "__main__":
    cmd, arg = sys.argv[1], sys.argv[2]
    result = {"iceberg": iceberg, "parquet": parquet, "create-old": create_old}[cmd](arg)
    print(json.dumps(result, default=str))
