#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium (Playwright drives it through
# executable_path; its own browser download is not used) and the npm assets the demo serves.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
  else
    echo "chromium is missing: sudo apt-get install chromium" >&2
  fi
fi
if [ -f posthog/demo/package.json ] && [ ! -d posthog/demo/node_modules ]; then
  (cd posthog/demo && npm install --no-audit --no-fund --silent)
fi
