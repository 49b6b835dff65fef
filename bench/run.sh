#!/usr/bin/env bash
# `make bench`: install what the benchmark needs, then run it (python -m bench "$@").
# Needs: the project venv with the test extra (autoplay-sdk), the bench extra (matplotlib,
# py-spy), wrk (Debian package), and a high open-file limit for 5,000 subscribers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv
  "$PY" -m pip install -q --upgrade pip
fi
"$PY" -m pip install -q -e '.[test]'
# The `bench` extra once pyproject.toml has it; the same pins otherwise.
have_tools() { "$PY" -c 'import matplotlib' 2>/dev/null && [ -x .venv/bin/py-spy ]; }
if ! have_tools; then
  "$PY" -m pip install -q -e '.[bench]' 2>/dev/null || true
  have_tools || "$PY" -m pip install -q 'matplotlib==3.11.2' 'py-spy==0.4.3'
fi
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq wrk
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$PY" -m bench "$@"
