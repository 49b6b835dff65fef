"""``bridge serve [--host H] [--port P] [--env-file F]``: run the bridge with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from bridge.app import create_app
from bridge.settings import BridgeSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP bridge")
    serve.add_argument("--host", help="bind address (default: BRIDGE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: BRIDGE_PORT or 8090)")
    serve.add_argument(
        "--env-file",
        default=".env",
        help="env file read before the environment's defaults (default: .env, if present)",
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING … (default: BRIDGE_LOG_LEVEL)")
    return parser


def load_settings(env_file: str | None) -> BridgeSettings:
    path = Path(env_file) if env_file else None
    # Real environment variables still win over the file (pydantic-settings precedence).
    return BridgeSettings(_env_file=path if path and path.is_file() else None)  # type: ignore[call-arg]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ValidationError as exc:
        # Missing STREAM_URL is the usual first-run mistake: say which variable, no traceback.
        print(f"bridge: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if settings.reply_token is None:
        # /reply would refuse everyone: say so now rather than have every chat fall back.
        print(
            "bridge: BRIDGE_REPLY_TOKEN is not set. /reply requires it as a Bearer token and the "
            "Rasa action server sends it: set the same value for both (e.g. `openssl rand "
            "-base64 32`).",
            file=sys.stderr,
        )
        return 2
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    level = (args.log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=level.lower(),
        # The bridge is a single process holding in-memory context: never more than one worker.
        workers=1,
    )
    return 0
