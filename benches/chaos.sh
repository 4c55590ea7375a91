#!/usr/bin/env bash
# Chaos soak (a benchmark, not a CI test; scripts/test.sh runs a short one): N events with S3
# images through Kafka while the worker is SIGKILLed KILLS times at random (a supervisor
# restarts it, as Kubernetes would), the broker restarts BROKER_RESTARTS times, MinIO is
# stopped for MINIO_DOWN seconds, and poison items sit in the stream (3 that abort the
# process, model errors, panics, NaN outputs, malformed JSON). At the end every output topic
# is read back: events, lost (must be 0), duplicates, dead letters by reason, the worker's
# peak RSS beside its memory bound. Exit 1 on a lost event or a poison item with the wrong
# reason. DELIVERY=exactly_once runs the worker with Kafka transactions (outputs read back
# read_committed) and also fails on any duplicate. Details in benches/chaos.py; figures in
# benches/README.md.
# Usage (repository root): [BINARY=path] [DELIVERY=exactly_once] benches/chaos.sh [N=10000] [KILLS=20] [BROKER_RESTARTS=2] [MINIO_DOWN=30] [OUT=chaos.json]
# BINARY defaults to the release build (built here); the worker runs with
# FUSIONSTREAM_TEST_FAULTS=1 so that the poison items fire.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
py="$FUSIONSTREAM_PYTHON"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
if [[ -z ${BINARY:-} ]]; then
  cargo build --release -p fusionstream --locked -q
  BINARY="$CARGO_TARGET_DIR/release/fusionstream"
fi
scripts/dev-services.sh up > /dev/null
eval "$(scripts/dev-services.sh env)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); binary: $BINARY"
exec "$py" benches/chaos.py "$BINARY" "${1:-10000}" "${2:-20}" "${3:-2}" "${4:-30}" "${5:-chaos.json}"
