#!/usr/bin/env bash
# Run the whole suite with the compiled kernels, then again with the
# pure-Python twins selected, the way a build without a C compiler runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python

"$PY" -m pytest "$@"
WSGISHIELD_NO_EXTENSIONS=1 "$PY" -m pytest -q "$@"
