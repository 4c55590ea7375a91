#!/usr/bin/env bash
# The project's Python environment, cached: $HOME/.cache/fusionstream/pyenv with
# models/requirements.txt (torch, transformers, onnx, onnxruntime, pytest). Re-installs only
# when the requirements change. Prints shell exports:
#   FUSIONSTREAM_PYTHON   the environment's python
#   ORT_DYLIB_PATH        the ONNX Runtime library of the onnxruntime wheel (the Rust backend's)
# Usage: eval "$(scripts/python-env.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FUSIONSTREAM_CACHE:-$HOME/.cache/fusionstream}"
ENV="$CACHE/pyenv"
REQ=models/requirements.txt
stamp="$ENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -x "$ENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "python-env: installing $REQ into $ENV (first run: a few minutes)" >&2
  python3 -m venv "$ENV"
  "$ENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$want" > "$stamp"
fi
lib=$("$ENV/bin/python" -c 'import glob, os, onnxruntime as o; print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so.*")))[-1])')
echo "export FUSIONSTREAM_PYTHON=$ENV/bin/python"
echo "export ORT_DYLIB_PATH=$lib"
