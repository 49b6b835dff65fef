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
have_tools() { "$PY" -c 'import matplotlib, autoplay_sdk' 2>/dev/null && [ -x .venv/bin/py-spy ]; }
have_tools || "$PY" -m pip install -q -e '.[test,bench]'
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq wrk
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$PY" -m bench "$@"
