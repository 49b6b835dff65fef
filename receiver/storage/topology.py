"""The replication topology as the receiver sees it: for ``receiver db status``, ``/readyz``
and ``/metrics``.

From the server the pool reaches (the primary): whether it is one, what it waits for at
commit (``synchronous_standby_names``, ``synchronous_commit``), and every standby streaming
from it with its sync state and lag. ``pg_stat_replication`` shows the WAL positions only to
superusers and members of ``pg_monitor`` (``pg_read_all_stats``): without that grant the
standbys are listed with ``visible: false``. ``probe_hosts`` additionally connects to every
host of the URI on its own, so an operator sees a node that is down or has fallen behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from receiver.storage import dsn

TOPOLOGY_SQL = """
SELECT concat_ws(':', inet_server_addr(), inet_server_port()) AS server,
       pg_is_in_recovery() AS in_recovery,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       current_setting('synchronous_commit') AS synchronous_commit,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
            ELSE pg_current_wal_lsn() END::text AS lsn,
       (SELECT coalesce(json_agg(json_build_object(
            'name', application_name,
            'client_addr', client_addr::text,
            'state', state,
            'sync_state', sync_state,
            'flush_lsn', flush_lsn::text,
            'replay_lsn', replay_lsn::text,
            'flush_lag_bytes', CASE WHEN pg_is_in_recovery() THEN NULL
                               ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) END,
            'replay_lag_bytes', CASE WHEN pg_is_in_recovery() THEN NULL
                                ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) END,
            'replay_lag_seconds', extract(epoch FROM replay_lag)
        ) ORDER BY application_name), '[]'::json) FROM pg_stat_replication)::text AS standbys
"""

# Standbys whose confirmation a commit can wait for (FIRST n / ANY n respectively).
COUNTING = ("sync", "quorum")


async def describe(conn: Any, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    row = await conn.fetchrow(TOPOLOGY_SQL, timeout=timeout)
    standbys = orjson.loads(row["standbys"])
    for s in standbys:
        s["visible"] = s.get("state") is not None
        for key in ("flush_lag_bytes", "replay_lag_bytes"):
            if s.get(key) is not None:
                s[key] = int(float(s[key]))
    names = row["synchronous_standby_names"]
    counting = [s for s in standbys if s.get("sync_state") in COUNTING and s.get("state") == "streaming"]
    out: dict[str, Any] = {
        "server": row["server"] or "(unix socket)",
        "role": "standby" if row["in_recovery"] else "primary",
        "lsn": row["lsn"],
        "synchronous_standby_names": names,
        "synchronous_commit": row["synchronous_commit"],
        "sync_required": bool(names),
        "sync_standbys": len(counting),
        "standbys": standbys,
    }
    out["commit_waits_for"] = commit_waits_for(out)
    return out


def commit_waits_for(t: dict[str, Any]) -> str:
    """What a 200 means right now, in words."""
    if t["role"] != "primary":
        return "nothing: this server is a standby and refuses writes"
    if t["synchronous_commit"] in ("off", "local"):
        return f"the primary only (synchronous_commit={t['synchronous_commit']})"
    if not t["sync_required"]:
        return "the primary only (no synchronous standby configured)"
    if any(not s["visible"] for s in t["standbys"]):
        return "a synchronous standby (positions hidden: GRANT pg_monitor to see them)"
    if t["sync_standbys"] == 0:
        return "a synchronous standby, and none is connected: commits are blocked"
    return "the primary and a synchronous standby"


async def probe_hosts(url: str, timeout: float = 3.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Each host of the URI on its own: role and WAL position, or why it is unreachable."""
    parsed = dsn.parse(url)
    hosts = parsed.hosts or (("", None),)

    async def probe(host: str, port: int | None) -> dict[str, Any]:
        one = parsed.with_host(host, port).render()
        where = f"{host or 'localhost'}:{port or 5432}"
        try:
            conn = await asyncpg.connect(one, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return {"host": where, "role": "unreachable", "error": f"{type(exc).__name__}: {exc}"[:200]}
        try:
            row = await conn.fetchrow(
                "SELECT pg_is_in_recovery() AS r, CASE WHEN pg_is_in_recovery() "
                "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn",
                timeout=timeout,
            )
            return {"host": where, "role": "standby" if row["r"] else "primary", "lsn": row["lsn"]}
        finally:
            await conn.close()

    return list(await asyncio.gather(*(probe(h, p) for h, p in hosts)))
