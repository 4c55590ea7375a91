#!/usr/bin/env bash
# The lake sink, side by side in one run over the same N image objects in the dev MinIO
# (copies of the six example scenes; tasks embed + caption + tag), release build:
#   1. `fusionstream backfill` to local JSONL (the local sink: the baseline at saturation);
#   2. `fusionstream backfill --sink lake`, Iceberg tables through the dev REST catalog;
#   3. the same, lake.format = "parquet";
#   4. benches/python_backfill_iceberg.py: boto3 + PIL + transformers, pyiceberg appends.
# Prints each side's objects/s and what it wrote (rows read back by pyiceberg / pyarrow).
# Usage (repository root): benches/compare_lake.sh [N] [PYTHON]   (PYTHON: torch,
# transformers, pillow, boto3, pyiceberg: scripts/python-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
py="${2:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
tag="$$_$(date +%s)"
bucket="lake-bench-$$-$(date +%s)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/upload_scenes.py "$bucket" "$n"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "objects: $n PNG scenes under s3://$bucket/photos/ (tasks embed, caption, tag)"
summary='import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ["finished","seconds","events_per_second","backends"]}))'
run() { # label sink [VAR=value...]
  local label=$1 sink=$2
  shift 2
  echo "== fusionstream backfill --sink $sink ($label)"
  env FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
    FUSIONSTREAM__S3__ENDPOINT="$FUSIONSTREAM_TEST_S3_ENDPOINT" FUSIONSTREAM__S3__FORCE_PATH_STYLE=true \
    FUSIONSTREAM__LAKE__CATALOG_URI="$FUSIONSTREAM_TEST_ICEBERG_URI" \
    FUSIONSTREAM__LAKE__WAREHOUSE="$FUSIONSTREAM_TEST_WAREHOUSE" "$@" \
    "$CARGO_TARGET_DIR/release/fusionstream" backfill "s3://$bucket/photos/" --sink "$sink" \
    --out "$work/$label" --json | "$py" -c "$summary"
}
run local local
wc -l "$work"/local/*.jsonl | tail -n 1
run iceberg lake FUSIONSTREAM__LAKE__NAMESPACE="rs_$tag" FUSIONSTREAM__LAKE__WRITER=bench
run parquet lake FUSIONSTREAM__LAKE__NAMESPACE="pq_$tag" FUSIONSTREAM__LAKE__WRITER=bench \
  FUSIONSTREAM__LAKE__FORMAT=parquet
echo "== python backfill (boto3 + PIL + transformers, batch 32, pyiceberg append every 1000 objects)"
"$py" benches/python_backfill_iceberg.py "$bucket" photos/ "py_$tag" 32 1000 2> /dev/null
echo "== read back (pyiceberg, pyarrow): rows per table"
for ns in "rs_$tag" "py_$tag"; do
  "$py" workers/fusionstream/tests/lake_read.py iceberg "$ns" \
    | "$py" -c "import json,sys; t=json.load(sys.stdin); print('$ns', {k: v['rows'] for k, v in t.items()})"
done
"$py" workers/fusionstream/tests/lake_read.py parquet "$FUSIONSTREAM_TEST_WAREHOUSE/pq_$tag" \
  | "$py" -c "import json,sys; t=json.load(sys.stdin); print('pq_$tag', {k: v['rows'] for k, v in t['streams'].items()})"
