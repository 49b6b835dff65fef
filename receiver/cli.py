"""The ``receiver`` command: parse arguments, build Settings, call into the package.

    receiver serve [--host H] [--port P] [--workers N]
    receiver migrate
    receiver product create <id> --contact-email E [--json]
    receiver product create --provider posthog|amplitude --project-id P --contact-email E
                            [--name N] [--owner-token T] [--json]
    receiver product list | show <id> | delete <id> --yes
    receiver product rotate <id> [--stream-key] [--mcp-key] [--grace-seconds S]
    receiver product policy <id> [--email keep|hash|drop] [--query keep|strip] [--redact REGEX]...
    receiver product session-link <id> [token|open|off]
    receiver push status [<id>] | retry <id> [--from N] [--to M] | skip <id> [--from N] [--to M] --yes
    receiver push rotate <id> [--grace-seconds S]

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
from pydantic import SecretStr, ValidationError

from receiver.errors import NotFoundError, ReceiverError
from receiver.ingest import privacy
from receiver.ops import connections, metrics
from receiver.ops import logging as receiver_logging
from receiver.settings import Settings
from receiver.storage import devdb, migrate, products, store

log = logging.getLogger("receiver.cli")
EMBEDDED_DB = "receiver"

# What `receiver --help` shows (the module docstring above is for developers).
DESCRIPTION = """\
autoplay receiver: PostHog (or posthog-js) events into your own Postgres, re-emitted to the
stock autoplay-sdk clients as a Server-Sent-Events stream."""
EPILOG = """\
Without RECEIVER_DATABASE_URL every command uses an embedded Postgres under RECEIVER_DATA_DIR
(./.data), started when needed. Settings are RECEIVER_* environment variables.

First steps:
  receiver serve                                              (what `make run` runs)
  receiver product create my-app --contact-email you@example.com

`receiver COMMAND --help` shows a command's options; docs/getting-started.md walks through it."""

# uvicorn's lifecycle lines say what the CLI's own console lines already say; a text console
# shows them only at DEBUG (JSON logs, read by machines, keep them).
_UVICORN_LIFECYCLE = (
    "Started server process", "Waiting for application", "Application startup complete",
    "Application shutdown complete", "Uvicorn running on", "Shutting down",
    "Finished server process", "Started parent process", "Waiting for child process",
    "Stopping parent process",
)


# --------------------------------------------------------------------------- database


@contextlib.contextmanager
def database(
    settings: Settings, *, keep_running: bool = False, announce: bool = False
) -> Iterator[Settings]:
    """Yield settings whose database_url points at a running server.

    ``announce``: say when the embedded server starts and stops (``serve`` does; one-shot
    commands print only what was asked for).
    """
    if settings.database_url is not None:
        yield settings
        return
    srv = devdb.server(settings.data_dir / "pg" / "data", settings.embedded_pg_port)
    srv.start()
    if srv.started_by_us and announce:
        print(f"embedded postgres started on 127.0.0.1:{srv.port} ({srv.data_dir})", file=sys.stderr)
    try:
        asyncio.run(_ensure_database(srv.dsn("postgres"), EMBEDDED_DB))
        url = srv.url(EMBEDDED_DB)
        os.environ["RECEIVER_DATABASE_URL"] = url  # inherited by --workers processes
        yield settings.model_copy(update={"database_url": SecretStr(url)})
    finally:
        if srv.started_by_us and not keep_running:
            srv.stop()
            if announce:
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
    connections.install(settings)  # this worker's connection limits
    return create_app(settings, manage_gc=settings.gc_freeze)


def serve(settings: Settings) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with database(settings, announce=True) as settings:
        migrate.upgrade(settings.database_url_str())
        connections.raise_fd_limit()  # before workers start: they inherit it
        common: dict[str, Any] = dict(
            host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
            proxy_headers=False, timeout_graceful_shutdown=10, access_log=False,
            # httptools with a header deadline, a header size cap and a connection limit.
            loop="uvloop", http=connections.GuardedHttpToolsProtocol, lifespan="on",
            # Our handler (receiver.ops.logging) formats uvicorn's records too (JSON or text).
            log_config=None,
        )
        print(f"receiver listening on http://{settings.host}:{settings.port}", file=sys.stderr)
        if not settings.log_json:
            _first_steps(settings)
        if settings.workers == 1:
            from receiver.app import create_app

            connections.install(settings)
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


def _first_steps(settings: Settings) -> None:
    """On a console, tell a new user what to do next: register a product, while there is none."""
    count = _run(_with_conn(settings, lambda c: c.fetchval("SELECT count(*) FROM products")))
    if count:
        print(f"{count} product(s) registered; `receiver product list` lists them. Ctrl-C stops.",
              file=sys.stderr)
        return
    print(
        "No product yet. In another terminal, register one:\n"
        f"  {_command_name()} product create my-app --contact-email you@example.com\n"
        "It prints what to paste where (PostHog, posthog-js, the stream). Ctrl-C stops the receiver.",
        file=sys.stderr,
    )


def _command_name() -> str:
    """How the user ran us: ``.venv/bin/receiver`` from a checkout, else ``receiver``."""
    argv0 = os.path.abspath(sys.argv[0])
    rel = os.path.relpath(argv0)
    return rel if os.path.basename(argv0) == "receiver" and not rel.startswith("..") else "receiver"


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


def _text(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=_default) if value else "(none)"
    return _default(value)


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=_default, indent=2))
        return
    if isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={_text(v)}" for k, v in row.items()))
        if not data:
            print("(none)")
        return
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            print(f"{key}:")
            for item in value:
                print("  - " + "  ".join(f"{k}={_text(v)}" for k, v in item.items()))
        else:
            print(f"{key.ljust(width)}  {_text(value)}")


def product_command(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        base = settings.base_url()
        action = args.product_action
        if action == "create" and args.provider is not None:
            return _create_by_project(args, settings, base)
        if action == "create":
            if args.product_id is None:
                print("error: give a product id, or --provider and --project-id", file=sys.stderr)
                return 2
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
                print("Save these now: the secret and the keys are shown only once.\n")
            _print(out, args.json)
            if not args.json:
                print(next_steps(out))
        elif action == "list":
            _print(_run(_with_conn(settings, products.list_all)), args.json)
        elif action == "show":
            info = _run(_with_conn(settings, lambda c: products.describe(c, args.product_id)))
            every = products.urls(base, args.product_id)
            for key in ("webhook_url", "ingest_url", "stream_url", "mcp_url", "live_activity_url"):
                info[key] = every[key]
            _print(info, args.json)
        elif action == "rotate":
            grace = settings.secret_grace_seconds if args.grace_seconds is None else args.grace_seconds
            issued = _run(
                _with_conn(
                    settings,
                    lambda c: products.rotate(
                        c, args.product_id, webhook_secret=not args.stream_key_only,
                        stream_key=args.stream_key or args.stream_key_only,
                        mcp_key=args.mcp_key, grace_seconds=grace,
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
        elif action == "session-link":
            async def session_link(conn: asyncpg.Connection) -> str:
                if args.mode is None:
                    auth = await products.load(conn, args.product_id)
                    if auth is None:
                        raise NotFoundError(f"unknown product {args.product_id!r}")
                    return auth.session_link
                return await products.set_session_link(conn, args.product_id, args.mode)

            mode = _run(_with_conn(settings, session_link))
            _print({"product_id": args.product_id, "session_link": mode}, args.json)
        elif action == "delete":
            if not args.yes:
                print("refusing to delete without --yes (this deletes all its events)", file=sys.stderr)
                return 2
            removed = _run(_with_conn(settings, lambda c: products.delete(c, args.product_id)))
            _print({"deleted": args.product_id, "events_removed": removed}, args.json)
    return 0


def _create_by_project(args: argparse.Namespace, settings: Settings, base: str) -> int:
    """``product create --provider … --project-id …``: what 0.13.0's onboard_product does."""
    if args.product_id is not None or args.project_id is None:
        print(
            "error: --provider needs --project-id and no product id (one is issued)",
            file=sys.stderr,
        )
        return 2
    registration = _run(
        _with_conn(
            settings,
            lambda c: products.register_by_project(
                c, provider=args.provider, provider_project_id=args.project_id,
                contact_email=args.contact_email, name=args.name, owner_token=args.owner_token,
                grace_seconds=settings.secret_grace_seconds,
            ),
        )
    )
    out = registration.as_dict(base)
    if args.json:
        _print(out, True)
        return 0
    print("Save these now: the secrets and the owner token are shown only once.\n")
    flat = {k: v for k, v in out.items() if not isinstance(v, dict)}
    flat.update(out["setup"])
    flat.update({k: v for k, v in out["credentials"].items() if v is not None})
    _print(flat, False)
    return 0


def next_steps(issued: dict[str, Any]) -> str:
    """What to paste where, with the values just issued (``product create``'s text output)."""
    origin = issued["capture_url"].removesuffix("/e/")
    text = f"""
Next, paste them where they go (docs/getting-started.md has the details):
  PostHog HTTP destination:  URL {issued['webhook_url']}
                             header x-posthog-secret: {issued['webhook_secret']}
  posthog-js, direct:        posthog.init('{issued['capture_token']}', {{api_host: '{origin}'}})
  tutorial bridge .env:      STREAM_URL={issued['stream_url']}
                             UNKEY_API_KEY={issued['stream_key']}
  try the stream:            curl -N '{issued['stream_url']}?since=0' \\
                               -H 'Authorization: Bearer {issued['stream_key']}'"""
    if issued.get("mcp_key"):
        text += f"""
  agents, MCP or REST:       {issued['mcp_url']}  (docs/connect-agent.md)
                             header Authorization: Bearer {issued['mcp_key']}"""
    return text


def push_command(args: argparse.Namespace, settings: Settings) -> int:
    """``receiver push ...``: lag, failures and dead letters; redelivery by position range."""
    from receiver.delivery.push import outbox

    with database(settings) as settings:
        migrate.upgrade(settings.database_url_str())
        action = args.push_action
        if action == "status":
            async def status(conn: asyncpg.Connection) -> Any:
                rows = await outbox.status(conn, args.product_id)
                if args.product_id is None:
                    return rows
                out = rows[0]
                out["dead_letter_list"] = await outbox.dead_letters(conn, args.product_id, limit=20)
                out["recent_attempts"] = await outbox.recent_attempts(
                    conn, args.product_id, limit=10
                )
                return out

            out = _run(_with_conn(settings, status))
            if not out and not args.json:
                print("no push endpoints")
                return 0
            _print(out, args.json)
        elif action == "retry":
            n = _run(_with_conn(
                settings,
                lambda c: outbox.retry(c, args.product_id, first=args.first, last=args.last),
            ))
            _print({"product_id": args.product_id, "queued_for_redelivery": n}, args.json)
        elif action == "skip":
            if not args.yes:
                print("refusing to skip without --yes (those payloads are never sent)", file=sys.stderr)
                return 2
            _print(_run(_with_conn(
                settings,
                lambda c: outbox.skip(c, args.product_id, first=args.first, last=args.last),
            )), args.json)
        elif action == "rotate":
            grace = settings.secret_grace_seconds if args.grace_seconds is None else args.grace_seconds
            secret = _run(_with_conn(
                settings,
                lambda c: outbox.rotate(c, args.product_id, secret=None, grace_seconds=grace),
            ))
            if not args.json:
                print("Save this now: the new push secret is shown only once.\n")
            _print({"product_id": args.product_id, "push_secret": secret,
                    "previous_secret_signs_for_seconds": grace}, args.json)
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
    handler = receiver_logging.configure(level=settings.log_level, json=settings.log_json)
    if settings.log_level.upper() != "DEBUG":
        # Alembic narrates every migration step at INFO; the commands say what matters.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if not settings.log_json:
            handler.addFilter(_quiet_console)


def _quiet_console(record: logging.LogRecord) -> bool:
    return not (
        record.name == "uvicorn.error" and record.levelno == logging.INFO
        and record.getMessage().startswith(_UVICORN_LIFECYCLE)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_serve = sub.add_parser(
        "serve", help="migrate the database, then serve HTTP (what `make run` runs)",
        description="Apply the database migrations, then serve the webhook, capture, stream and "
        "admin routes until Ctrl-C or SIGTERM (which drain in-flight requests first).",
    )
    p_serve.add_argument("--host", help="address to listen on (default: RECEIVER_HOST or 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port to listen on (default: RECEIVER_PORT or 8000)")
    p_serve.add_argument(
        "--workers", type=int, help="processes sharing the socket (default: RECEIVER_WORKERS or 1)"
    )

    sub.add_parser(
        "migrate", help="apply the database migrations and print the schema revision",
        description="Apply the database migrations (serve does it too) and print the revision.",
    )

    p_prod = sub.add_parser(
        "product", help="register products and manage their credentials and privacy policy",
        description="Register products and manage their credentials and privacy policy.",
    )
    psub = p_prod.add_subparsers(dest="product_action", required=True, metavar="ACTION")
    p_create = psub.add_parser(
        "create", help="register a product and print its credentials (shown once)",
        description="Register a product and print what to paste where: the webhook URL and "
        "secret (PostHog), the capture token (posthog-js), the stream URL and key (autoplay-sdk), "
        "the MCP key (agents). Name the product id yourself (the 0.7.2 way), or register by "
        "analytics project with --provider and --project-id and an opaque id is issued, as "
        "autoplay-sdk 0.13.0's onboard_product does.",
    )
    p_create.add_argument(
        "product_id", nargs="?",
        help="the product's id, used in every URL (omit with --provider/--project-id)",
    )
    p_create.add_argument("--contact-email", required=True, help="who to contact about the product")
    p_create.add_argument(
        "--force", action="store_true",
        help="re-register an existing product: issue new credentials (the old ones keep working "
        "for RECEIVER_SECRET_GRACE_SECONDS)",
    )
    p_create.add_argument(
        "--provider", choices=products.PROVIDERS,
        help="register by analytics project: the provider the events come from",
    )
    p_create.add_argument(
        "--project-id", help="with --provider: your PostHog or Amplitude project id"
    )
    p_create.add_argument("--name", help="with --provider: a display name for the product")
    p_create.add_argument(
        "--owner-token",
        help="with --provider, for a project already registered: its owner token (rotates "
        "every credential)",
    )
    p_list = psub.add_parser(
        "list", help="list the products", description="List the registered products."
    )
    p_show = psub.add_parser(
        "show", help="show a product: URLs, capture token, credentials (never secrets), policy",
        description="Show a product: its URLs, capture token, credential ids and expiry, and "
        "privacy policy. Secrets are stored only as hashes and cannot be shown again.",
    )
    p_show.add_argument("product_id", help="the product's id")
    p_rotate = psub.add_parser(
        "rotate", help="issue a new webhook secret (the old one keeps working for a grace period)",
        description="Issue a new webhook secret (and, if asked, stream key). The previous one "
        "keeps working for the grace period, then stops.",
    )
    p_rotate.add_argument("product_id", help="the product's id")
    p_rotate.add_argument("--stream-key", action="store_true", help="also rotate the stream key")
    p_rotate.add_argument(
        "--stream-key-only", action="store_true", help="rotate only the stream key"
    )
    p_rotate.add_argument(
        "--mcp-key", action="store_true",
        help="also rotate the MCP key (agents' live-activity reads)",
    )
    p_rotate.add_argument(
        "--grace-seconds", type=float,
        help="how long the old credentials keep working (default: RECEIVER_SECRET_GRACE_SECONDS)",
    )
    p_delete = psub.add_parser(
        "delete", help="delete a product and all its events",
        description="Delete a product, its credentials and all its events.",
    )
    p_delete.add_argument("product_id", help="the product's id")
    p_delete.add_argument("--yes", action="store_true", help="confirm: nothing is deleted without it")
    p_policy = psub.add_parser(
        "policy",
        help="show or change a product's privacy policy (applies to events received from then on)",
        description="Without options: show the policy. Options change only what they name.",
    )
    p_policy.add_argument("product_id", help="the product's id")
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
    p_link = psub.add_parser(
        "session-link",
        help="show or set who may call POST /sessions/link for a product",
        description="token: the request carries the product's capture token (default); "
        "open: anyone, like the hosted connector; off: refused.",
    )
    p_link.add_argument("product_id", help="the product")
    p_link.add_argument(
        "mode", nargs="?", choices=products.SESSION_LINK_MODES,
        help="the new mode (omit it to show the current one)",
    )
    for p in (p_create, p_list, p_show, p_rotate, p_delete, p_policy, p_link):
        p.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "sql", help="open psql on the configured database (extra options go to psql)",
        description="Open psql on the configured database, embedded included. Any further "
        "options are passed to psql, e.g. receiver sql -c 'SELECT * FROM daily_activity'.",
    )
    p_db = sub.add_parser(
        "db", help="database maintenance, retention and read-only access for analysts",
        description="Database maintenance, retention and read-only access for analysts.",
    )
    dsub = p_db.add_subparsers(dest="db_action", required=True, metavar="ACTION")
    p_status = dsub.add_parser(
        "status",
        help="show the primary, the standbys, their sync state and replication lag",
        description="Read-only. Connects through RECEIVER_DATABASE_URL as the receiver does "
        "(a pg_auto_failover multi-host URI included), shows what a commit waits for and every "
        "standby streaming from the primary, then probes each host of the URI on its own. "
        "Exit status 1 when no primary is reachable.",
    )
    p_maint = dsub.add_parser(
        "maintain", help="create partitions ahead, apply retention, prune dedup keys (idempotent)",
        description="Run the maintenance the receiver runs every RECEIVER_MAINTENANCE_SECONDS: "
        "create partitions ahead, apply retention, prune deduplication keys and idle session "
        "counters. Idempotent; exits 3 if another run holds the lock.",
    )
    p_grant = dsub.add_parser(
        "grant-readonly", help="let a role read the events table and the views, nothing else",
        description="Create (if needed) a role that can read the events table and the four views, "
        "and nothing else: no products, no credentials, no writes.",
    )
    p_grant.add_argument("role", help="the role's name (created NOLOGIN unless --login or --password)")
    p_grant.add_argument("--login", action="store_true", help="a new role may log in (default NOLOGIN)")
    p_grant.add_argument(
        "--password", nargs="?", const="", default=None,
        help="set a password (implies --login); prompts when no value is given",
    )
    p_ret = dsub.add_parser(
        "retention", help="show or set a product's retention",
        description="Show a product's retention, or override the global values for it.",
    )
    p_ret.add_argument("product_id", help="the product's id")
    p_ret.add_argument("--days", type=_days, default=_UNSET, help="N, 0 = forever, or 'default'")
    p_ret.add_argument(
        "--payload-days", type=_days, default=_UNSET,
        help="days the raw payload is kept: N, 0 = as long as the event, or 'default'",
    )
    p_push = sub.add_parser(
        "push", help="push mode: delivery status, redelivery, skipping, secret rotation"
    )
    pushsub = p_push.add_subparsers(dest="push_action", required=True)
    p_pstatus = pushsub.add_parser(
        "status",
        help="lag, state, failures and dead letters of every push endpoint (or of one, with its "
        "dead letters and latest attempts)",
    )
    p_pstatus.add_argument("product_id", nargs="?", help="only this product, in detail")
    p_retry = pushsub.add_parser(
        "retry", help="send the dead letters of a position range again (before newer events)"
    )
    p_skip = pushsub.add_parser(
        "skip",
        help="give up on a position range: drop its dead letters, and never send the events "
        "of it not delivered yet",
    )
    for p in (p_retry, p_skip):
        p.add_argument("product_id", help="the product")
        p.add_argument(
            "--from", dest="first", type=int, metavar="N", help="first position (default: 1)"
        )
        p.add_argument(
            "--to", dest="last", type=int, metavar="M", help="last position (default: no limit)"
        )
    p_skip.add_argument("--yes", action="store_true", help="confirm: those payloads are never sent")
    p_protate = pushsub.add_parser(
        "rotate",
        help="new signing secret, printed once; requests carry both signatures for the grace "
        "period",
    )
    p_protate.add_argument("product_id", help="the product")
    p_protate.add_argument(
        "--grace-seconds", type=float,
        help="how long the old secret keeps signing (default: RECEIVER_SECRET_GRACE_SECONDS)",
    )
    for p in (p_pstatus, p_retry, p_skip, p_protate):
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p_erase = sub.add_parser(
        "erase", help="delete one person's events and print how many",
        description="Delete every event of a distinct_id, and the other events of their sessions, "
        "from every partition; running receivers drop their cached frames of them.",
    )
    p_erase.add_argument("--distinct-id", required=True, help="the person's PostHog distinct_id")
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
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # A bad RECEIVER_* value (e.g. a short RECEIVER_ADMIN_TOKEN): say which, no traceback.
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
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
        if args.command == "push":
            return push_command(args, settings)
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
