#!/usr/bin/env bash
# Installs what the hardening tests need: valgrind, whose callgrind counts the CPU instructions a
# scanner executes (tests/security/opcount.py: work is asserted as operations, never as time).
# Idempotent and quick when it is there. Safe to run concurrently (flock).
set -euo pipefail
lock="${TMPDIR:-/tmp}/autoplay-security-deps.$(id -u).lock"
exec 9>"$lock"
flock 9
if ! command -v valgrind >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "security-deps: installing Debian valgrind" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends valgrind >/dev/null
  else
    echo "security-deps: valgrind is missing (sudo apt-get install valgrind); scanner cost tests will skip" >&2
  fi
fi
