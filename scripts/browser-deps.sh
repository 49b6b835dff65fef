#!/usr/bin/env bash
# Installs what the browser tests and `make demo` need:
#   - Debian's chromium (Playwright drives it through executable_path; Playwright's own browser
#     download is not used and does not work here);
#   - the demo's npm assets (posthog-js, rasa-webchat), pinned by posthog/demo/package-lock.json,
#     into posthog/demo/node_modules (git-ignored). The demo serves them itself: no CDN.
# Idempotent and quick when everything is in place. Safe to run concurrently (flock).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=posthog/demo
lock="${TMPDIR:-/tmp}/autoplay-browser-deps.$(id -u).lock"
exec 9>"$lock"
flock 9

# BROWSER_DEPS_SKIP_CHROMIUM=1: only the npm assets (scripts/demo.sh needs no browser).
if [ "${BROWSER_DEPS_SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "browser-deps: installing Debian chromium" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
  else
    echo "browser-deps: chromium is missing (sudo apt-get install chromium); browser tests will skip" >&2
  fi
fi

stamp="$demo/node_modules/.installed-from-lock"
need_npm=0
[ -f "$stamp" ] || need_npm=1
[ "$need_npm" = 1 ] || [ ! "$demo/package-lock.json" -nt "$stamp" ] || need_npm=1
[ -f "$demo/node_modules/posthog-js/dist/array.full.js" ] || need_npm=1
[ -f "$demo/node_modules/rasa-webchat/lib/index.js" ] || need_npm=1
if [ "$need_npm" = 1 ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "browser-deps: npm is missing (apt-get install npm)" >&2
    exit 1
  fi
  echo "browser-deps: npm ci in $demo" >&2
  (cd "$demo" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  touch "$stamp"
fi
