#!/usr/bin/env bash
# PDQ hashes per second, one thread, side by side in one run: fusionstream's PDQ (criterion,
# workers/model/benches/pdq.rs) and the `pdqhash` package (the reference C++ through its
# Python bindings, benches/pdq_python.py) on the same decoded pixels of three fixture images
# (64x64, 640x480, 2000x1500). Installs pdqhash==0.2.8 into PYTHON's environment if missing.
# Usage (repository root): benches/compare_pdq.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
py="${1:-$FUSIONSTREAM_PYTHON}"
"$py" -c 'import pdqhash' 2>/dev/null || "$py" -m pip install -q pdqhash==0.2.8
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== pdqhash $("$py" -c 'import pdqhash; print(pdqhash.__version__)') (reference C++, one thread)"
OMP_NUM_THREADS=1 "$py" benches/pdq_python.py
echo "== fusionstream (criterion, one thread)"
RAYON_NUM_THREADS=1 cargo bench -q -p fusionstream-model --bench pdq -- --noplot 2>&1 \
  | awk '/^pdq\//{name=$1} /thrpt:/ && !/%/ {gsub(/\[|\]/, ""); print name, $(NF-3), $(NF-2)}'
