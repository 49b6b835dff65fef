"""The ``receiver`` command: parse arguments, build Settings, call into the package.

    receiver serve [--host H] [--port P] [--workers N]
    receiver migrate
    receiver product create <id> --contact-email E [--json]
    receiver product list | show <id> | rotate <id> [--stream-key] [--grace-seconds S] | delete <id> --yes
    receiver product policy <id> [--email keep|hash|drop] [--query keep|strip] [--redact REGEX]...

    receiver sql [psql options...]
    receiver db status | maintain | grant-readonly <role> [--login] [--password [PW]]
    receiver db retention <product> [--days N|default] [--payload-days N|default]
    receiver erase --distinct-id <id> [--product <p>]
Without ``RECEIVER_DATABASE_URL`` every command uses the embedded Postgres under
``RECEIVER_DATA_DIR`` (``./.data``), starting it if needed; ``serve`` stops it on exit if it
started it, other commands stop it again right away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import SecretStr

from receiver.errors import ReceiverError
from receiver.ingest import privacy
from receiver.ops import logging as receiver_logging
from receiver.ops import metrics
from receiver.settings import Settings
from receiver.storage import devdb, migrate, products, store

log = logging.getLogger("receiver.cli")
EMBEDDED_DB = "receiver"


# --------------------------------------------------------------------------- database


@contextlib.contextmanager
def database(settings: Settings, *, keep_running: bool = False) -> Iterator[Settings]:
    """Yield settings whose database_url points at a running server."""
    if settings.database_url is not None:
        yield settings
        return
    srv = devdb.server(settings.data_dir / "pg" / "data", settings.embedded_pg_port)
    srv.start()
    if srv.started_by_us:
        print(f"embedded postgres started on 127.0.0.1:{srv.port} ({srv.data_dir})", file=sys.stderr)
    try:
        asyncio.run(_ensure_database(srv.dsn("postgres"), EMBEDDED_DB))
        url = srv.url(EMBEDDED_DB)
        os.environ["RECEIVER_DATABASE_URL"] = url  # inherited by --workers processes
        yield settings.model_copy(update={"database_url": SecretStr(url)})
    finally:
        if srv.started_by_us and not keep_running:
            srv.stop()
            print("embedded postgres stopped", file=sys.stderr)


async def _ensure_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- serve


def app_factory() -> Any:
    """Entry point for uvicorn worker processes (``--workers`` > 1)."""
    from receiver.app import create_app

    settings = Settings()
    _configure_logging(settings)
    return create_app(settings, manage_gc=settings.gc_freeze)


def serve(settings: Settings) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        common: dict[str, Any] = dict(
            host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
            proxy_headers=False, timeout_graceful_shutdown=10, access_log=False,
            loop="uvloop", http="httptools", lifespan="on",
            # Our handler (receiver.ops.logging) formats uvicorn's records too (JSON or text).
            log_config=None,
        )
        print(f"receiver listening on http://{settings.host}:{settings.port}", file=sys.stderr)
        if settings.workers == 1:
            from receiver.app import create_app

            config = uvicorn.Config(create_app(settings, manage_gc=settings.gc_freeze), **common)
            # One worker needs no shared metrics directory, but honours one set by the operator.
            shared = (metrics.shared_across_workers() if os.environ.get(metrics.MULTIPROC_ENV)
                      else contextlib.nullcontext())
            with shared:
                uvicorn.Server(config).run()
        else:
            config = uvicorn.Config(
                "receiver.cli:app_factory", factory=True, workers=settings.workers, **common
            )
            sock = config.bind_socket()
            # Each worker's app chains its own early-shutdown signal handler (see
            # runtime.chain_exit_signals), so streams end promptly with any worker count.
            with metrics.shared_across_workers():
                Multiprocess(config, sockets=[sock]).run()
    return 0


# --------------------------------------------------------------------------- products


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_conn(settings: Settings, fn: Any) -> Any:
    conn = await asyncpg.connect(store.asyncpg_dsn(settings.database_url_str()))
    try:
        return await fn(conn)
    finally:
        await conn.close()


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=_default, indent=2))
        return
    if isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={_default(v)}" for k, v in row.items()))
        return
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print("  - " + "  ".join(f"{k}={_default(v)}" for k, v in item.items()))
        else:
            print(f"{key.ljust(width)}  {_default(value)}")


def product_command(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        base = settings.base_url()
        action = args.product_action
        if action == "create":
            issued = _run(
                _with_conn(
                    settings,
                    lambda c: products.create(
                        c, args.product_id, contact_email=args.contact_email,
                        force=args.force, grace_seconds=settings.secret_grace_seconds,
                    ),
                )
            )
            out = issued.as_dict(base)
            if not args.json:
                print("Save these now: the secret and the stream key are shown only once.\n")
            _print(out, args.json)
        elif action == "list":
            _print(_run(_with_conn(settings, products.list_all)), args.json)
        elif action == "show":
            info = _run(_with_conn(settings, lambda c: products.describe(c, args.product_id)))
            info["webhook_url"] = f"{base}/webhook/{args.product_id}"
            info["stream_url"] = f"{base}/stream/{args.product_id}"
            _print(info, args.json)
        elif action == "rotate":
            grace = settings.secret_grace_seconds if args.grace_seconds is None else args.grace_seconds
            issued = _run(
                _with_conn(
                    settings,
                    lambda c: products.rotate(
                        c, args.product_id, webhook_secret=not args.stream_key_only,
                        stream_key=args.stream_key or args.stream_key_only, grace_seconds=grace,
                    ),
                )
            )
            out = issued.as_dict(base)
            out["previous_credentials_expire_in_seconds"] = grace
            _print(out, args.json)
        elif action == "policy":
            out = policy_command(args, settings)
            if not args.json:
                out = {k: ", ".join(v) if isinstance(v, list) else v for k, v in out.items()}
            _print(out, args.json)
        elif action == "delete":
            if not args.yes:
                print("refusing to delete without --yes (this deletes all its events)", file=sys.stderr)
                return 2
            removed = _run(_with_conn(settings, lambda c: products.delete(c, args.product_id)))
            _print({"deleted": args.product_id, "events_removed": removed}, args.json)
    return 0


def policy_command(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Show, or change and show, a product's privacy policy."""
    changes = {
        k: v for k, v in (("email", args.email), ("query", args.query)) if v is not None
    }
    if args.redact is not None or args.no_redact:
        changes["redact"] = [] if args.no_redact else args.redact
    if args.builtin_redactions is not None:
        names = [n.strip() for n in args.builtin_redactions.split(",") if n.strip()]
        changes["builtin_redactions"] = [] if names == ["none"] else names

    async def run(conn: asyncpg.Connection) -> privacy.Policy:
        if not changes and not args.reset:
            return await products.get_policy(conn, args.product_id)
        current = privacy.DEFAULT if args.reset else await products.get_policy(conn, args.product_id)
        policy = privacy.Policy.from_json({**current.to_json(), **changes})
        if policy.needs_hash_key and settings.pii_hash_key is None:
            raise privacy.PolicyError(
                "--email hash needs RECEIVER_PII_HASH_KEY: set the same key here and on every "
                "receiver process (they refuse to start without it once a product hashes emails)"
            )
        return await products.set_policy(conn, args.product_id, policy)

    policy = _run(_with_conn(settings, run))
    return {"product_id": args.product_id, **policy.to_json()}


# --------------------------------------------------------------------------- sql, db, erase


def sql_command(psql_args: list[str], settings: Settings) -> int:
    """psql on the configured database (embedded included): exec'd, or run as a child while
    an embedded server we started must be stopped afterwards."""
    from receiver.storage import sql

    if psql_args[:1] == ["--"]:
        psql_args = psql_args[1:]
    embedded = settings.database_url is None
    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        argv, env = sql.psql_invocation(settings.database_url_str(), psql_args)
        if not embedded:
            sys.stdout.flush()
            os.execvpe(argv[0], argv, env)  # noqa: S606 - replaces this process by design
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to psql
        try:
            return subprocess.run(argv, env=env, check=False).returncode
        finally:
            signal.signal(signal.SIGINT, previous)


_UNSET: Any = object()


def _days(value: str) -> int | None:
    if value == "default":
        return None
    days = int(value)
    if days < 0:
        raise argparse.ArgumentTypeError("days must be >= 0 (0 = forever) or 'default'")
    return days


async def _set_retention(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> Any:
    sets, values = [], [args.product_id]
    for column, attr in (("retention_days", "days"), ("payload_retention_days", "payload_days")):
        if getattr(args, attr) is not _UNSET:
            values.append(getattr(args, attr))
            sets.append(f"{column} = ${len(values)}")
    if sets:
        await conn.execute(
            f"UPDATE products SET {', '.join(sets)}, updated_at = now() WHERE product_id = $1",  # noqa: S608
            *values,
        )
    row = await conn.fetchrow(
        "SELECT retention_days, payload_retention_days FROM products WHERE product_id = $1",
        args.product_id,
    )
    if row is None:
        from receiver.errors import NotFoundError

        raise NotFoundError(f"unknown product {args.product_id!r}")
    days = row["retention_days"]
    payload = row["payload_retention_days"]
    return {
        "product_id": args.product_id,
        "retention_days": "default" if days is None else days,
        "payload_retention_days": "default" if payload is None else payload,
        "effective_retention_days": settings.retention_days if days is None else days,
        "effective_payload_retention_days": (
            settings.payload_retention_days if payload is None else payload
        ),
        "note": "0 = forever (payload: as long as the event); applied by the next maintenance",
    }


async def _db_status(url: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    from receiver.storage import dsn, topology

    out: dict[str, Any] = {"uri": dsn.redacted(url)}
    try:
        conn = await asyncpg.connect(store.asyncpg_dsn(url), timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported, with every host's own state below
        out.update(connected_to="(no primary reachable)", error=f"{type(exc).__name__}: {exc}"[:300])
    else:
        try:
            t = await topology.describe(conn, timeout=timeout)
        finally:
            await conn.close()
        out.update(
            connected_to=f"{t['server']} ({t['role']})", commit_waits_for=t["commit_waits_for"],
            synchronous_standby_names=t["synchronous_standby_names"] or "''",
            synchronous_commit=t["synchronous_commit"], lsn=t["lsn"],
            sync_standbys=t["sync_standbys"], standbys=t["standbys"],
        )
    out["hosts"] = await topology.probe_hosts(store.asyncpg_dsn(url), timeout=timeout)
    return out


def db_status_command(args: argparse.Namespace, settings: Settings) -> int:
    """Primary, standbys, sync state and lag, as this receiver's URI reaches them (read-only)."""
    with database(settings) as settings:
        out = _run(_db_status(settings.database_url_str(), min(settings.db_timeout_seconds, 5.0)))
    if not args.json:
        for s in out.get("standbys", []):
            for key in ("client_addr", "flush_lsn", "replay_lsn"):
                s.pop(key, None)
    _print(out, args.json)
    return 0 if "error" not in out else 1


def db_command(args: argparse.Namespace, settings: Settings) -> int:
    from receiver.storage import retention, sql

    if args.db_action == "status":
        return db_status_command(args, settings)
    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        if args.db_action == "maintain":
            policy = retention.policy_from(settings)
            report = _run(_with_conn(settings, lambda c: retention.maintain(c, policy)))
            _print(report.as_dict(), args.json)
            return 3 if report.skipped else 0
        if args.db_action == "grant-readonly":
            password = args.password
            if password == "":
                import getpass

                password = getpass.getpass(f"password for role {args.role}: ")
            out = _run(
                _with_conn(
                    settings,
                    lambda c: sql.grant_readonly(c, args.role, password=password, login=args.login),
                )
            )
            _print(out, args.json)
            return 0
        out = _run(_with_conn(settings, lambda c: _set_retention(c, args, settings)))
        _print(out, args.json)
    return 0


def erase_command(args: argparse.Namespace, settings: Settings) -> int:
    from receiver.storage import retention

    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        counts = _run(
            _with_conn(settings, lambda c: retention.erase(c, args.distinct_id, args.product))
        )
        removed = counts["events"] + counts["session_events"]
        out = {
            "distinct_id": args.distinct_id, "product": args.product or "(all)",
            "rows_removed": removed, **counts,
        }
        if args.json:
            _print(out, True)
        else:
            print(
                f"removed {removed} rows: {counts['events']} events of {args.distinct_id!r} "
                f"and {counts['session_events']} other events of their sessions "
                f"(product: {out['product']})"
            )
    return 0


# --------------------------------------------------------------------------- main


def _configure_logging(settings: Settings) -> None:
    receiver_logging.configure(level=settings.log_level, json=settings.log_json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="migrate, then serve HTTP")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workers", type=int)

    sub.add_parser("migrate", help="apply database migrations")

    p_prod = sub.add_parser("product", help="manage products")
    psub = p_prod.add_subparsers(dest="product_action", required=True)
    p_create = psub.add_parser("create", help="register a product and print its credentials")
    p_create.add_argument("product_id")
    p_create.add_argument("--contact-email", required=True)
    p_create.add_argument("--force", action="store_true", help="re-register: rotate credentials")
    p_list = psub.add_parser("list")
    p_show = psub.add_parser("show")
    p_show.add_argument("product_id")
    p_rotate = psub.add_parser("rotate", help="issue a new webhook secret (old one keeps working)")
    p_rotate.add_argument("product_id")
    p_rotate.add_argument("--stream-key", action="store_true", help="also rotate the stream key")
    p_rotate.add_argument(
        "--stream-key-only", action="store_true", help="rotate only the stream key"
    )
    p_rotate.add_argument("--grace-seconds", type=float)
    p_delete = psub.add_parser("delete", help="delete a product and all its events")
    p_delete.add_argument("product_id")
    p_delete.add_argument("--yes", action="store_true")
    p_policy = psub.add_parser(
        "policy",
        help="show or change a product's privacy policy (applies to events received from then on)",
        description="Without options: show the policy. Options change only what they name.",
    )
    p_policy.add_argument("product_id")
    p_policy.add_argument(
        "--email", choices=privacy.EMAIL_MODES,
        help="keep the email, hash it (HMAC with RECEIVER_PII_HASH_KEY) or drop it",
    )
    p_policy.add_argument(
        "--query", choices=privacy.QUERY_MODES, help="keep or strip URL query strings and fragments"
    )
    p_policy.add_argument(
        "--redact", action="append", metavar="REGEX",
        help="a redaction pattern (repeatable; replaces the product's custom patterns)",
    )
    p_policy.add_argument("--no-redact", action="store_true", help="remove all custom patterns")
    p_policy.add_argument(
        "--builtin-redactions", metavar="NAMES",
        help="comma-separated builtin patterns (card_number,email) or 'none'",
    )
    p_policy.add_argument("--reset", action="store_true", help="start from the default policy")
    for p in (p_create, p_list, p_show, p_rotate, p_delete, p_policy):
        p.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "sql", help="open psql on the configured database (extra options go to psql)",
        description="Open psql on the configured database, embedded included. Any further "
        "options are passed to psql, e.g. receiver sql -c 'SELECT * FROM daily_activity'.",
    )
    p_db = sub.add_parser("db", help="database maintenance and access")
    dsub = p_db.add_subparsers(dest="db_action", required=True)
    p_status = dsub.add_parser(
        "status",
        help="show the primary, the standbys, their sync state and replication lag",
        description="Read-only. Connects through RECEIVER_DATABASE_URL as the receiver does "
        "(a pg_auto_failover multi-host URI included), shows what a commit waits for and every "
        "standby streaming from the primary, then probes each host of the URI on its own. "
        "Exit status 1 when no primary is reachable.",
    )
    p_maint = dsub.add_parser(
        "maintain", help="create partitions ahead, apply retention, prune dedup keys (idempotent)"
    )
    p_grant = dsub.add_parser(
        "grant-readonly", help="let a role read the events table and the views, nothing else"
    )
    p_grant.add_argument("role")
    p_grant.add_argument("--login", action="store_true", help="a new role may log in (default NOLOGIN)")
    p_grant.add_argument(
        "--password", nargs="?", const="", default=None,
        help="set a password (implies --login); prompts when no value is given",
    )
    p_ret = dsub.add_parser("retention", help="show or set a product's retention")
    p_ret.add_argument("product_id")
    p_ret.add_argument("--days", type=_days, default=_UNSET, help="N, 0 = forever, or 'default'")
    p_ret.add_argument(
        "--payload-days", type=_days, default=_UNSET,
        help="days the raw payload is kept: N, 0 = as long as the event, or 'default'",
    )
    p_erase = sub.add_parser("erase", help="delete one person's events and print how many")
    p_erase.add_argument("--distinct-id", required=True)
    p_erase.add_argument("--product", help="only this product (default: all products)")
    for p in (p_status, p_maint, p_grant, p_ret, p_erase):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "sql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = {
        k: v for k, v in (
            ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
            ("workers", getattr(args, "workers", None)),
        ) if v is not None
    }
    settings = Settings(**overrides)
    _configure_logging(settings)
    # SIGTERM should unwind like Ctrl-C so the embedded database is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "migrate":
            with database(settings) as s:
                migrate.upgrade(s.database_url_str())
                print(f"database at migration {migrate.head_revision()}")
            return 0
        if args.command == "sql":
            return sql_command(extra, settings)
        if args.command == "db":
            return db_command(args, settings)
        if args.command == "erase":
            return erase_command(args, settings)
        return product_command(args, settings)
    except ReceiverError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except devdb.DevDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM after an orderly shutdown: a clean exit, so that systemd and
        # container runtimes don't report a failure for a requested stop.
        return 0


if __name__ == "__main__":
    sys.exit(main())
