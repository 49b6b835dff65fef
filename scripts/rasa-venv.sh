#!/usr/bin/env bash
# Builds the Python 3.10 virtualenv for Rasa 3.6.21 + rasa-sdk 3.6.2 (.venv-rasa) and trains the
# bot into .rasa-models/. Both steps are idempotent: the venv is rebuilt only when
# rasa-bot/requirements.txt or rasa-bot/constraints.txt change, and the model is retrained only
# when the training data / config / domain change (sha256 stamps).
#
# Rasa 3.6 needs Python 3.10 (and pins pydantic v1), so it cannot live in the project's 3.11 venv.
# When no 3.10 interpreter exists this prints why and exits 0: the `rasa`-marked tests then skip.
#
# Environment:
#   RASA_PYTHON      explicit interpreter to use (must be 3.10)
#   RASA_VENV        venv directory           (default: .venv-rasa)
#   RASA_MODELS_DIR  model output directory   (default: .rasa-models)
#   RASA_SKIP_TRAIN  set to 1 to build the venv only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${RASA_VENV:-$ROOT/.venv-rasa}"
MODELS="${RASA_MODELS_DIR:-$ROOT/.rasa-models}"
BOT="$ROOT/rasa-bot"
MODEL_NAME="bot"

log() { echo "[rasa-venv] $*"; }

# Two callers (e.g. `make test` and a developer shell) must not pip-install into the same venv at
# once; serialise on a lock file in the (git-ignored) models directory.
mkdir -p "$MODELS"
exec 9>"$MODELS/.lock"
flock 9

find_python310() {
  local cand
  if [ -n "${RASA_PYTHON:-}" ]; then
    echo "$RASA_PYTHON"
    return 0
  fi
  # pyenv ships 3.10.13 on these machines but it is not the global version, so the bare
  # python3.10 shim fails unless PYENV_VERSION selects it.
  if PYENV_VERSION=3.10.13 python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' \
      >/dev/null 2>&1; then
    cand="$(PYENV_VERSION=3.10.13 python3.10 -c 'import sys; print(sys.executable)')"
    echo "$cand"
    return 0
  fi
  if python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
    python3.10 -c 'import sys; print(sys.executable)'
    return 0
  fi
  return 1
}

hash_files() {
  # Hash of names + contents, so renames and deletions count as changes too.
  local f
  for f in "$@"; do
    printf '%s\n' "${f#"$ROOT"/}"
    cat "$f"
  done | sha256sum | cut -d' ' -f1
}

if ! PY310="$(find_python310)"; then
  log "no Python 3.10 found (tried RASA_PYTHON, 'PYENV_VERSION=3.10.13 python3.10', 'python3.10')."
  log "skipping the Rasa virtualenv; tests marked 'rasa' will be skipped."
  exit 0
fi

# --- 1. the virtualenv -------------------------------------------------------------------------
REQ_HASH="$(hash_files "$BOT/requirements.txt" "$BOT/constraints.txt")"
STAMP="$VENV/.installed"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
  log "venv up to date: $VENV"
else
  start=$(date +%s)
  log "building $VENV with $PY310 (rasa==3.6.21, ~2 min, ~2.7 GB)"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY310" -m venv "$VENV"
  fi
  rm -f "$STAMP"
  # The grep drops pip's "Location … is ignored" lines (find-links dirs absent on this host);
  # pipefail keeps pip's exit status.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$BOT/requirements.txt" -c "$BOT/constraints.txt" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  "$VENV/bin/python" -m pip check >/dev/null || {
    log "pip check reports broken requirements in $VENV"
    "$VENV/bin/python" -m pip check || true
    exit 1
  }
  echo "$REQ_HASH" >"$STAMP"
  log "venv ready in $(($(date +%s) - start)) s"
fi

if [ "${RASA_SKIP_TRAIN:-0}" = 1 ]; then
  exit 0
fi

# --- 2. the model ------------------------------------------------------------------------------
export RASA_TELEMETRY_ENABLED=false SQLALCHEMY_SILENCE_UBER_WARNING=1 TF_CPP_MIN_LOG_LEVEL=2
# Rasa's training cache defaults to ./.rasa/cache inside rasa-bot/; keep it with the models
# (git-ignored) instead.
export RASA_CACHE_DIRECTORY="$MODELS/cache"
mapfile -t TRAIN_INPUTS < <(find "$BOT/config.yml" "$BOT/domain.yml" "$BOT/data" -type f \
  -name '*.yml' | LC_ALL=C sort)
# The stamp also covers the venv hash: a different Rasa install must not reuse an old model.
DATA_HASH="$(printf '%s\n%s\n' "$REQ_HASH" "$(hash_files "${TRAIN_INPUTS[@]}")" | sha256sum |
  cut -d' ' -f1)"
MODEL="$MODELS/$MODEL_NAME.tar.gz"
MSTAMP="$MODELS/.trained"
if [ -f "$MODEL" ] && [ -f "$MSTAMP" ] && [ "$(cat "$MSTAMP")" = "$DATA_HASH" ]; then
  log "model up to date: $MODEL"
  exit 0
fi

mkdir -p "$MODELS"
rm -f "$MSTAMP"
cd "$BOT"
start=$(date +%s)
log "validating training data"
"$VENV/bin/rasa" data validate --fail-on-warnings
log "training $MODEL (~1 min)"
"$VENV/bin/rasa" train --fixed-model-name "$MODEL_NAME" --out "$MODELS"
echo "$DATA_HASH" >"$MSTAMP"
log "model trained in $(($(date +%s) - start)) s"
