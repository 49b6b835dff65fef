#!/usr/bin/env bash
# Installs the official MCP TypeScript SDK for the Node client test (tests/pull/test_mcp_node.py),
# pinned by tests/mcp_node/package-lock.json, into tests/mcp_node/node_modules (git-ignored).
# Idempotent and quick when in place; safe to run concurrently (flock).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/mcp_node
exec 9>"${TMPDIR:-/tmp}/autoplay-mcp-node-deps.$(id -u).lock"
flock 9
stamp="$dir/node_modules/.installed-from-lock"
if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] \
   && [ -f "$dir/node_modules/@modelcontextprotocol/sdk/package.json" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "mcp-node-deps: npm is missing (apt-get install npm)" >&2
  exit 1
fi
echo "mcp-node-deps: npm ci in $dir" >&2
(cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
touch "$stamp"
