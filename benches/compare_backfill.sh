#!/usr/bin/env bash
# Backfill over an S3 prefix, side by side in one run: N image objects in the dev MinIO (copies
# of the six example scenes), processed for embed + caption + tag by `fusionstream backfill`
# (release build; concurrent fetches, micro-batches, checkpoint) and by a straightforward
# Python script (benches/python_backfill.py: boto3 list + get, PIL, transformers, batch 32).
# Both write local JSONL. Prints each side's objects/s and the records it wrote.
# Usage (repository root): benches/compare_backfill.sh [N] [PYTHON]   (PYTHON: torch,
# transformers, pillow, boto3)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
py="${2:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build --release -p fusionstream --locked -q
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
bucket="backfill-bench-$$-$(date +%s)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" benches/upload_scenes.py "$bucket" "$n"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "objects: $n PNG scenes under s3://$bucket/photos/ (tasks embed, caption, tag)"
echo "== fusionstream backfill"
FUSIONSTREAM__TELEMETRY__PROGRESS=never FUSIONSTREAM__TELEMETRY__LOG_LEVEL=warn \
FUSIONSTREAM__S3__ENDPOINT="$FUSIONSTREAM_TEST_S3_ENDPOINT" FUSIONSTREAM__S3__FORCE_PATH_STYLE=true \
  "$CARGO_TARGET_DIR/release/fusionstream" backfill "s3://$bucket/photos/" --out "$work/rust" --json \
  | "$py" -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ["finished","seconds","events_per_second","model_seconds"]}))'
wc -l "$work"/rust/*.jsonl
echo "== python backfill (boto3 + PIL + transformers, batch 32)"
"$py" benches/python_backfill.py "$bucket" photos/ "$work/python" 32 2>/dev/null
wc -l "$work"/python/*.jsonl
