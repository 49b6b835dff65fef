#!/usr/bin/env bash
# Builds .venv-sdk013: the stock autoplay-sdk 0.13.0 (onboarding by project id, WebhookReceiver) in a venv
# of its own, pinned by tests/sdk013/requirements.txt. The project's venv keeps 0.7.2, the tutorial's SDK;
# tests drive 0.13.0 through this venv's python in a subprocess. Idempotent (a hash stamp), safe to run
# concurrently (flock).
#
# Environment: SDK013_VENV  venv directory (default: .venv-sdk013)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${SDK013_VENV:-$ROOT/.venv-sdk013}"
REQ="$ROOT/tests/sdk013/requirements.txt"
PYTHON="${PYTHON:-python3}"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

HASH="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.installed"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi
echo "[sdk013-venv] building $VENV (autoplay-sdk 0.13.0)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" 2>&1 |
  { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("autoplay-sdk") == "0.13.0"'
echo "$HASH" >"$STAMP"
