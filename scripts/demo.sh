#!/usr/bin/env bash
# `make demo`: the "Direct, on-prem" route on one machine, all on 127.0.0.1.
#   1. the receiver (`receiver serve`, embedded Postgres under .data/ unless RECEIVER_DATABASE_URL),
#   2. a demo product (created once; its credentials are kept in .data/demo/<product>.json,
#      because the webhook secret and stream key are shown only at creation),
#   3. the demo app (posthog/demo/serve.py), whose posthog-js sends straight to the receiver.
# Prints the URLs, then waits. Ctrl-C (or SIGTERM) stops everything it started.
#
# Environment: RECEIVER_PORT (8000), DEMO_PORT (8050), DEMO_PRODUCT (demo),
#   DEMO_RASA_URL (unset: no chat widget; e.g. http://127.0.0.1:5005), PYTHON_BIN (.venv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PYTHON_BIN:-.venv/bin}
PY="$BIN/python"
RECEIVER="$BIN/receiver"
export RECEIVER_HOST=127.0.0.1
export RECEIVER_PORT=${RECEIVER_PORT:-8000}
DEMO_PORT=${DEMO_PORT:-8050}
PRODUCT=${DEMO_PRODUCT:-demo}
RASA_URL=${DEMO_RASA_URL:-}
STATE=.data/demo
RECEIVER_URL="http://127.0.0.1:$RECEIVER_PORT"
APP_URL="http://127.0.0.1:$DEMO_PORT"

for exe in "$PY" "$RECEIVER"; do
  [ -x "$exe" ] || { echo "demo: $exe is missing: run 'make venv' first" >&2; exit 1; }
done
BROWSER_DEPS_SKIP_CHROMIUM=1 bash scripts/browser-deps.sh   # npm assets (posthog-js, rasa-webchat)
mkdir -p "$STATE"
chmod 700 "$STATE"

port_free() {
  "$PY" -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" \
    2>/dev/null
}
for p in "$RECEIVER_PORT" "$DEMO_PORT"; do
  port_free "$p" || { echo "demo: port $p on 127.0.0.1 is in use (set RECEIVER_PORT / DEMO_PORT)" >&2; exit 1; }
done

pids=()
stopping=0
cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap - INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    echo >&2
    echo "demo: stopping (${pids[*]})" >&2
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # the receiver stops its embedded Postgres on SIGTERM; give it time, then insist
    for _ in $(seq 1 200); do
      alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

wait_http() {  # url, seconds, pid, log: poll until 200 or the process dies / the deadline passes
  local url=$1 secs=$2 pid=$3 log=$4
  local deadline=$((SECONDS + secs))
  until "$PY" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" \
      2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: process for $url exited; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: $url not ready after ${secs}s; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1
    fi
    sleep 0.2
  done
}

# 1. receiver
echo "demo: starting the receiver on $RECEIVER_URL (log: $STATE/receiver.log)" >&2
"$RECEIVER" serve --host 127.0.0.1 --port "$RECEIVER_PORT" >"$STATE/receiver.log" 2>&1 &
pids+=($!)
wait_http "$RECEIVER_URL/readyz" 120 "${pids[0]}" "$STATE/receiver.log"

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
    echo "demo: product '$PRODUCT' exists but its saved credentials are missing: re-issuing them" >&2
    create_product --force || { echo "demo: could not re-issue credentials (see $STATE/cli.log)" >&2; exit 1; }
  fi
else
  echo "demo: creating product '$PRODUCT'" >&2
  create_product || { echo "demo: product create failed (see $STATE/cli.log)" >&2; exit 1; }
fi
rm -f "$STATE/show.json"
CAPTURE_TOKEN=$(json_field "$creds" capture_token)
STREAM_URL=$(json_field "$creds" stream_url)
STREAM_KEY=$(json_field "$creds" stream_key)
WEBHOOK_URL=$(json_field "$creds" webhook_url)

# 3. demo app
echo "demo: starting the demo app on $APP_URL (log: $STATE/app.log)" >&2
"$PY" posthog/demo/serve.py --port "$DEMO_PORT" --api-host "$RECEIVER_URL" \
  --token "$CAPTURE_TOKEN" --product-id "$PRODUCT" --rasa-url "$RASA_URL" >"$STATE/app.log" 2>&1 &
pids+=($!)
wait_http "$APP_URL/healthz" 30 "${pids[1]}" "$STATE/app.log"

cat <<EOF

  Demo app     $APP_URL/?user=user-alice&email=alice@example.com
               $APP_URL/?user=user-bob&email=bob@example.com   (another browser/profile)
  Receiver     $RECEIVER_URL   (posthog-js sends to $RECEIVER_URL/e/ with token $CAPTURE_TOKEN)
  Product      $PRODUCT   (credentials: $creds)
  Webhook      $WEBHOOK_URL   (the "Through PostHog" route; secret in $creds)
  Stream       $STREAM_URL
               curl -N -H "Authorization: Bearer $STREAM_KEY" $STREAM_URL
  Event table  $RECEIVER sql -c "SELECT occurred_at, distinct_id, event, pathname, element_text FROM events ORDER BY position DESC LIMIT 20"
  Chat widget  ${RASA_URL:-off (set DEMO_RASA_URL=http://127.0.0.1:5005, or open the app with ?rasa=<url>)}

  Ctrl-C stops the receiver, its embedded Postgres and the demo app.

EOF

# Wait until one of them exits (then stop the other) or Ctrl-C.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "demo: a process exited (status $status); see $STATE/*.log" >&2
exit "$status"
