#!/usr/bin/env bash
# `make demo`: the tutorial's whole loop on one machine, all on 127.0.0.1.
#   1. the receiver (`receiver serve`, embedded Postgres under .data/ unless RECEIVER_DATABASE_URL),
#   2. a demo product (created once; its credentials are kept in .data/demo/<product>.json,
#      because the webhook secret and stream key are shown only at creation),
#   3. the LLM: the OpenAI-compatible endpoint from the environment (BRIDGE_LLM_BASE_URL,
#      BRIDGE_LLM_API_KEY / OPENAI_API_KEY, BRIDGE_LLM_MODEL), or, when none is set, the "echo
#      LLM" from tests/fakes (answers with what it was given, so the loop works offline),
#   4. the bridge (`bridge serve`) on the product's stream,
#   5. when Rasa is available (.venv-rasa, built by scripts/rasa-venv.sh if a Python 3.10 exists):
#      the action server (rasa_sdk, BRIDGE_URL -> the bridge) and `rasa run` (REST + socketio),
#   6. the demo app (posthog/demo/serve.py): posthog-js sends straight to the receiver, and the
#      chat widget talks to Rasa with customData.userId = the identify id.
# Prints every URL, then waits. Ctrl-C (or SIGTERM) stops everything it started, in order.
#
# Environment: RECEIVER_PORT (8000), DEMO_PORT (8050), BRIDGE_PORT (8090), ACTION_PORT (5055),
#   RASA_PORT (5005), ECHO_LLM_PORT (8091), DEMO_PRODUCT (demo), PYTHON_BIN (.venv/bin),
#   DEMO_RASA=0 (no Rasa, no widget), DEMO_RASA_URL (use a Rasa you run yourself, e.g. docker
#   compose's http://127.0.0.1:5005: nothing Rasa is started then), DEMO_POSTHOG_OPTIONS (JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN=${PYTHON_BIN:-.venv/bin}
PY="$BIN/python"
RECEIVER="$BIN/receiver"
BRIDGE="$BIN/bridge"
export RECEIVER_HOST=127.0.0.1
export RECEIVER_PORT=${RECEIVER_PORT:-8000}
DEMO_PORT=${DEMO_PORT:-8050}
BRIDGE_PORT=${BRIDGE_PORT:-8090}
ACTION_PORT=${ACTION_PORT:-5055}
RASA_PORT=${RASA_PORT:-5005}
ECHO_LLM_PORT=${ECHO_LLM_PORT:-8091}
PRODUCT=${DEMO_PRODUCT:-demo}
STATE=.data/demo
RECEIVER_URL="http://127.0.0.1:$RECEIVER_PORT"
APP_URL="http://127.0.0.1:$DEMO_PORT"
BRIDGE_URL="http://127.0.0.1:$BRIDGE_PORT"
ACTION_URL="http://127.0.0.1:$ACTION_PORT"
RASA_VENV=$(realpath -m "${RASA_VENV:-$ROOT/.venv-rasa}")   # absolute: Rasa runs in rasa-bot/
RASA_MODEL=$(realpath -m "${RASA_MODELS_DIR:-$ROOT/.rasa-models}/bot.tar.gz")

say() { echo "demo: $*" >&2; }
warn() { printf '\ndemo: WARNING: %s\n\n' "$*" >&2; }

for exe in "$PY" "$RECEIVER" "$BRIDGE"; do
  [ -x "$exe" ] || { say "$exe is missing: run 'make venv' first"; exit 1; }
done
BROWSER_DEPS_SKIP_CHROMIUM=1 bash scripts/browser-deps.sh   # npm assets (posthog-js, rasa-webchat)
mkdir -p "$STATE"
chmod 700 "$STATE"

# --- what runs: the LLM and Rasa ----------------------------------------------------------------
# The environment's LLM, else the echo LLM. Only the environment counts (not a .env file: the
# repository's .env is docker compose's).
ECHO_LLM=0
if [ -z "${BRIDGE_LLM_BASE_URL:-}${OPENAI_BASE_URL:-}${BRIDGE_LLM_API_KEY:-}${OPENAI_API_KEY:-}" ]; then
  ECHO_LLM=1
fi

# Rasa: ours (needs .venv-rasa + a trained model), someone else's (DEMO_RASA_URL), or none.
RASA_MODE=off
RASA_URL=""
RASA_WHY=""
if [ -n "${DEMO_RASA_URL:-}" ]; then
  RASA_MODE=external
  RASA_URL=$DEMO_RASA_URL
elif [ "${DEMO_RASA:-1}" = 0 ]; then
  RASA_WHY="DEMO_RASA=0"
else
  # Idempotent: builds .venv-rasa (~2 min, ~2.7 GB) when a Python 3.10 exists, (re)trains the
  # model when the bot's files changed, and says why and exits 0 when there is no Python 3.10.
  say "checking the Rasa virtualenv and model (scripts/rasa-venv.sh)"
  if ! bash scripts/rasa-venv.sh 2>&1 | tee "$STATE/rasa-venv.log" >&2; then
    RASA_WHY="scripts/rasa-venv.sh failed (see $STATE/rasa-venv.log)"
  elif [ ! -x "$RASA_VENV/bin/rasa" ]; then
    RASA_WHY="no Python 3.10 to build $RASA_VENV with (set RASA_PYTHON=/path/to/python3.10)"
  elif [ ! -f "$RASA_MODEL" ]; then
    RASA_WHY="no trained model at $RASA_MODEL (see $STATE/rasa-venv.log)"
  else
    RASA_MODE=local
    RASA_URL="http://127.0.0.1:$RASA_PORT"
  fi
  [ -n "$RASA_WHY" ] && warn "no chat widget: $RASA_WHY. The rest of the loop runs (curl the bridge's /reply)."
fi

port_free() {  # SO_REUSEADDR, as the servers use: a TIME_WAIT left by the last run is no conflict
  "$PY" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()' "$1" 2>/dev/null
}
ports=("$RECEIVER_PORT" "$DEMO_PORT" "$BRIDGE_PORT")
[ "$ECHO_LLM" = 1 ] && ports+=("$ECHO_LLM_PORT")
[ "$RASA_MODE" = local ] && ports+=("$ACTION_PORT" "$RASA_PORT")
for p in "${ports[@]}"; do
  port_free "$p" || {
    say "port $p on 127.0.0.1 is in use (set RECEIVER_PORT / DEMO_PORT / BRIDGE_PORT / ECHO_LLM_PORT / ACTION_PORT / RASA_PORT)"
    exit 1
  }
done

# --- processes: started in their own sessions, stopped by us in reverse order ---------------------
# setsid keeps Ctrl-C (SIGINT to the terminal's process group) away from the children, so they
# are stopped one by one, clients before servers: no server waits out a graceful-shutdown timeout
# for a connection held by a client that is stopping too.
pids=()
names=()
grace=()
stopping=0
start() {  # name, seconds to wait after SIGTERM, log file, command...
  local name=$1 secs=$2 log=$3
  shift 3
  setsid "$@" >"$log" 2>&1 &
  pids+=($!)
  names+=("$name")
  grace+=("$secs")
}
stop_one() {  # pid, name, seconds
  local pid=$1 name=$2 secs=$3
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop within ${secs}s: killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM HUP
  local i t0=$SECONDS
  if [ "${#pids[@]}" -gt 0 ]; then
    echo >&2
    say "stopping ${names[*]} (last started, first stopped)"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      stop_one "${pids[$i]}" "${names[$i]}" "${grace[$i]}"
    done
    say "all stopped ($((SECONDS - t0)) s)"
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP
trap cleanup EXIT

last_pid() { echo "${pids[${#pids[@]} - 1]}"; }

wait_http() {  # url, seconds, pid, log: poll until 200 or the process dies / the deadline passes
  local url=$1 secs=$2 pid=$3 log=$4
  local deadline=$((SECONDS + secs))
  until "$PY" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" \
      2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "process for $url exited; last lines of $log:"; tail -n 30 "$log" >&2; exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$url not ready after ${secs}s; last lines of $log:"; tail -n 30 "$log" >&2; exit 1
    fi
    sleep 0.2
  done
}

# 1. receiver (its embedded Postgres stops with it: give it time)
say "starting the receiver on $RECEIVER_URL (log: $STATE/receiver.log)"
start receiver 30 "$STATE/receiver.log" "$RECEIVER" serve --host 127.0.0.1 --port "$RECEIVER_PORT"
wait_http "$RECEIVER_URL/readyz" 120 "$(last_pid)" "$STATE/receiver.log"

# 2. product (credentials kept from the first run; re-issued if they were lost)
creds="$STATE/$PRODUCT.json"
json_field() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
create_product() {
  local out
  out=$(umask 077; "$RECEIVER" product create "$PRODUCT" --contact-email demo@example.com --json "$@" \
    2>>"$STATE/cli.log") || return 1
  (umask 077; printf '%s\n' "$out" >"$creds")
}
if "$RECEIVER" product show "$PRODUCT" --json >"$STATE/show.json" 2>>"$STATE/cli.log"; then
  if [ ! -s "$creds" ] || [ "$(json_field "$creds" capture_token 2>/dev/null)" != \
      "$(json_field "$STATE/show.json" capture_token)" ]; then
    say "product '$PRODUCT' exists but its saved credentials are missing: re-issuing them"
    create_product --force || { say "could not re-issue credentials (see $STATE/cli.log)"; exit 1; }
  fi
else
  say "creating product '$PRODUCT'"
  create_product || { say "product create failed (see $STATE/cli.log)"; exit 1; }
fi
rm -f "$STATE/show.json"
CAPTURE_TOKEN=$(json_field "$creds" capture_token)
STREAM_KEY=$(json_field "$creds" stream_key)
# Not the URLs saved with the credentials: they carry the port of the run that created them.
STREAM_URL="$RECEIVER_URL/stream/$PRODUCT"
WEBHOOK_URL="$RECEIVER_URL/webhook/$PRODUCT"

# 3. the LLM
if [ "$ECHO_LLM" = 1 ]; then
  warn "no LLM configured (BRIDGE_LLM_BASE_URL, BRIDGE_LLM_API_KEY or OPENAI_API_KEY): starting the
         ECHO LLM (tests/fakes/llm.py) on 127.0.0.1:$ECHO_LLM_PORT. It is not a language model: it
         answers \"ANSWER for <name> | activity: <what the bridge sent> | q: <question>\".
         For real answers: export OPENAI_API_KEY=sk-..., or BRIDGE_LLM_BASE_URL=http://127.0.0.1:11434/v1
         BRIDGE_LLM_MODEL=llama3.1 for Ollama (see README, \"The whole loop\")."
  say "starting the echo LLM on http://127.0.0.1:$ECHO_LLM_PORT/v1 (log: $STATE/echo-llm.log)"
  start echo-llm 10 "$STATE/echo-llm.log" "$PY" -c '
import sys, uvicorn
from tests.fakes.llm import FakeLLM
uvicorn.run(FakeLLM().app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
' "$ECHO_LLM_PORT"
  wait_http "http://127.0.0.1:$ECHO_LLM_PORT/openapi.json" 30 "$(last_pid)" "$STATE/echo-llm.log"
  export BRIDGE_LLM_BASE_URL="http://127.0.0.1:$ECHO_LLM_PORT/v1"
  export BRIDGE_LLM_API_KEY=echo-llm BRIDGE_LLM_MODEL=echo-llm BRIDGE_LLM_MAX_RETRIES=0
  LLM_DESC="ECHO LLM (offline stand-in, not a model)  $BRIDGE_LLM_BASE_URL"
else
  LLM_DESC="${BRIDGE_LLM_BASE_URL:-${OPENAI_BASE_URL:-https://api.openai.com/v1}}  model ${BRIDGE_LLM_MODEL:-${LLM_MODEL:-gpt-4o-mini}}"
fi

# 4. bridge (--env-file '': the environment only; the stream settings override any exported ones).
# /reply needs a Bearer token that only the action server gets: one per run, never printed.
REPLY_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
(umask 077; printf '%s\n' "$REPLY_TOKEN" >"$STATE/reply-token")
say "starting the bridge on $BRIDGE_URL (log: $STATE/bridge.log)"
start bridge 15 "$STATE/bridge.log" env BRIDGE_STREAM_URL="$STREAM_URL" BRIDGE_STREAM_TOKEN="$STREAM_KEY" \
  BRIDGE_REPLY_TOKEN="$REPLY_TOKEN" "$BRIDGE" serve --env-file '' --host 127.0.0.1 --port "$BRIDGE_PORT"
wait_http "$BRIDGE_URL/healthz" 30 "$(last_pid)" "$STATE/bridge.log"
bridge_connected() {
  "$PY" -c 'import json,sys,urllib.request
sys.exit(0 if json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["stream_connected"] else 1)' \
    "$BRIDGE_URL/healthz" 2>/dev/null
}
deadline=$((SECONDS + 30))
until bridge_connected; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    warn "the bridge is not connected to $STREAM_URL after 30s (a 401/404 in $STATE/receiver.log?)"
    break
  fi
  sleep 0.2
done

# 5. action server and Rasa (Rasa loads its model for ~30-60 s: started now, awaited later)
RASA_ENV=(RASA_TELEMETRY_ENABLED=false SQLALCHEMY_SILENCE_UBER_WARNING=1 TF_CPP_MIN_LOG_LEVEL=2
  PYTHONUNBUFFERED=1 SANIC_GRACEFUL_SHUTDOWN_TIMEOUT=3)
if [ "$RASA_MODE" = local ]; then
  # endpoints.yml points Rasa at localhost:5055; another ACTION_PORT needs its own copy.
  ENDPOINTS=endpoints.yml
  if [ "$ACTION_PORT" != 5055 ]; then
    ENDPOINTS="$ROOT/$STATE/endpoints.yml"
    printf 'action_endpoint:\n  url: "http://127.0.0.1:%s/webhook"\n' "$ACTION_PORT" >"$ENDPOINTS"
  fi
  say "starting the action server on $ACTION_URL (log: $STATE/action-server.log)"
  # rasa_sdk has no host flag; it honours SANIC_HOST. (env -C: the bot's directory as cwd.)
  start action-server 10 "$STATE/action-server.log" \
    env -C rasa-bot "${RASA_ENV[@]}" SANIC_HOST=127.0.0.1 BRIDGE_URL="$BRIDGE_URL" \
    BRIDGE_REPLY_TOKEN="$REPLY_TOKEN" "$RASA_VENV/bin/python" -m rasa_sdk --actions actions -p "$ACTION_PORT"
  say "starting Rasa on $RASA_URL (log: $STATE/rasa.log)"
  # Rasa takes >10 s to exit on SIGTERM and holds nothing worth flushing (in-memory trackers).
  # Its HTTP API wants a token (a page on this machine must not drive the bot); the REST and
  # socket channels stay open, on loopback, for the widget and the curl below.
  RASA_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
  start rasa 8 "$STATE/rasa.log" \
    env -C rasa-bot "${RASA_ENV[@]}" RASA_CACHE_DIRECTORY="$ROOT/$STATE/rasa-cache" \
    "$RASA_VENV/bin/rasa" run --enable-api --auth-token "$RASA_TOKEN" --cors "*" -i 127.0.0.1 \
    -p "$RASA_PORT" --endpoints "$ENDPOINTS" --credentials credentials.yml -m "$RASA_MODEL"
fi

# 6. demo app
say "starting the demo app on $APP_URL (log: $STATE/app.log)"
start demo-app 10 "$STATE/app.log" "$PY" posthog/demo/serve.py --port "$DEMO_PORT" \
  --api-host "$RECEIVER_URL" --token "$CAPTURE_TOKEN" --product-id "$PRODUCT" --rasa-url "$RASA_URL"
wait_http "$APP_URL/healthz" 30 "$(last_pid)" "$STATE/app.log"

if [ "$RASA_MODE" = local ]; then
  for i in "${!names[@]}"; do
    case ${names[$i]} in
      action-server) wait_http "$ACTION_URL/health" 60 "${pids[$i]}" "$STATE/action-server.log" ;;
      rasa)
        say "waiting for Rasa to load its model (~30-60 s)"
        wait_http "$RASA_URL/" 300 "${pids[$i]}" "$STATE/rasa.log" ;;
    esac
  done
fi

case $RASA_MODE in
  local) CHAT="$RASA_URL  (socketio + REST; action server $ACTION_URL/health)" ;;
  external) CHAT="$RASA_URL  (DEMO_RASA_URL: yours; nothing Rasa started here)" ;;
  *) CHAT="off: $RASA_WHY" ;;
esac
cat <<EOF

  Demo app      $APP_URL/?user=user-alice&email=alice@example.com
                $APP_URL/?user=user-bob&email=bob@example.com   (another browser/profile)
                Team -> "Invite member", then ask the chat bubble "how do I add a teammate?"
  Receiver      $RECEIVER_URL   (posthog-js sends to $RECEIVER_URL/e/ with token $CAPTURE_TOKEN)
  Product       $PRODUCT   (credentials: $creds)
  Webhook       $WEBHOOK_URL   (the "Through PostHog" route; secret in $creds)
  Stream        $STREAM_URL
                curl -N -H "Authorization: Bearer $STREAM_KEY" $STREAM_URL
  Event table   $RECEIVER sql -c "SELECT occurred_at, distinct_id, event, pathname, element_text FROM events ORDER BY position DESC LIMIT 20"
  LLM           $LLM_DESC
  Bridge        $BRIDGE_URL/healthz
                curl -s -H "Authorization: Bearer \$(cat $STATE/reply-token)" "$BRIDGE_URL/reply/user-alice?query=what+did+I+just+do"
  Chat (Rasa)   $CHAT
EOF
if [ "$RASA_MODE" = local ]; then
  cat <<EOF
                curl -s $RASA_URL/webhooks/rest/webhook -H 'Content-Type: application/json' \\
                  -d '{"sender": "me", "message": "what did I just do", "metadata": {"customData": {"userId": "user-alice"}}}'
EOF
fi
cat <<EOF
  Logs          $STATE/*.log

  Ctrl-C stops ${names[*]}.

EOF

# Wait until one of them exits (then stop the others) or Ctrl-C.
set +e
wait -n "${pids[@]}"
status=$?
set -e
say "a process exited (status $status); see $STATE/*.log"
exit "$status"
