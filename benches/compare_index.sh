#!/usr/bin/env bash
# The live vector index against faiss-cpu HNSW, side by side in one run, one thread each:
# inserts/s, queries/s (one query at a time, k = 10), recall@10 against exact search, and
# memory per vector, on the same N vectors of 512 dimensions with the same parameters (M 16,
# efConstruction 128, efSearch 256: [index]'s defaults). Data: "embedding-like" (near a
# 32-dimensional subspace, as learned embeddings are) or "uniform" (random directions).
# Installs faiss-cpu==1.15.1 into the cached Python environment if missing.
# Usage (repository root):
#   benches/compare_index.sh [N=1000000] [KIND=embedding] [STORAGE=f16] [FAISS=f16,f32]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}" kind="${2:-embedding}" storage="${3:-f16}" faiss_storages="${4:-f16,f32}"
dim=512 queries=1000 k=10 m=16 ef_add=128 ef_search=256
eval "$(scripts/python-env.sh)"
py="$FUSIONSTREAM_PYTHON"
"$py" -c 'import faiss' 2>/dev/null || "$py" -m pip install -q faiss-cpu==1.15.1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
cargo build -q --release -p fusionstream-index --example index_bench
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "data: $n $kind vectors of $dim dimensions, $queries queries, exact top-$k (numpy)"
OMP_NUM_THREADS=2 "$py" benches/index_faiss.py gen "$data/v" "$n" "$queries" "$dim" "$kind" "$k"
"$CARGO_TARGET_DIR/release/examples/index_bench" "$data/v.base.f32" "$data/v.queries.f32" \
  "$data/v.gt.i32" "$dim" "$k" "$storage" "$m" "$ef_add" "$ef_search"
OMP_NUM_THREADS=1 "$py" benches/index_faiss.py faiss "$data/v" "$dim" "$k" "$m" "$ef_add" "$ef_search" "$faiss_storages"
