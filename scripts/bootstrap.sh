#!/usr/bin/env bash
# Prepare a fresh machine: system packages the tests use, a virtual
# environment in .venv, and wsgishield installed into it in editable mode
# with its compiled kernels. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Debian packages: redis-server (tests start their own on free ports),
# nginx (reverse-proxy tests) and prometheus for promtool (alert rule tests).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v nginx >/dev/null || missing+=(nginx)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: please install ${missing[*]} (Debian package names)" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the packaging files changed since the last bootstrap.
stamp="$VENV/.wsgishield-installed"
fingerprint=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel Cython
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    echo "$fingerprint" > "$stamp"
fi
# Editable installs build the kernels elsewhere; build them in place too so
# tests and tools that import from the work tree use the compiled code.
"$VENV/bin/python" setup.py -q build_ext --inplace
"$VENV/bin/python" -c 'import wsgishield; print("bootstrap: wsgishield ready, compiled kernels:", wsgishield.HAS_EXTENSIONS)' >&2
