#!/usr/bin/env bash
# Installs what the high-availability tests (tests/ha/) and docs/high-availability.md need, from
# Debian's packages:
#   - postgresql-15 (the server; already in most images, never upgraded here),
#   - postgresql-15-auto-failover and pg-auto-failover-cli (pg_autoctl 2.0: monitor + keepers),
#   - haproxy (2.6, in front of several receivers).
# Idempotent and quick when everything is in place. Safe to run concurrently (flock).
# As a non-root user it only reports what is missing; the HA tests then fail in CI and skip
# elsewhere.
set -euo pipefail
lock="${TMPDIR:-/tmp}/autoplay-ha-deps.$(id -u).lock"
exec 9>"$lock"
flock 9

pg_bin=/usr/lib/postgresql/15/bin
missing=()
[ -x "$pg_bin/postgres" ] || missing+=(postgresql-15)
[ -f /usr/lib/postgresql/15/lib/pgautofailover.so ] || missing+=(postgresql-15-auto-failover)
command -v pg_autoctl >/dev/null 2>&1 || missing+=(pg-auto-failover-cli)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "ha-deps: missing ${missing[*]} (sudo apt-get install ${missing[*]}); HA tests will not run" >&2
  exit 0
fi
echo "ha-deps: installing ${missing[*]}" >&2
apt-get update -q >/dev/null
# --no-upgrade: installing next to an existing PostgreSQL must not upgrade (and restart) it.
# No init system in containers: the packages' services are not started (policy-rc.d default).
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade \
  "${missing[@]}" >/dev/null
