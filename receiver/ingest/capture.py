"""PostHog's native capture API, so posthog-js can send straight to the receiver (on-prem).

Routes (each registered with and without the trailing slash: the app never redirects):

* ``POST /e/``, ``/i/v0/e/``, ``/batch/``, ``/capture/``, ``/track/`` — events. ``GET`` with
  ``?data=`` (the legacy pixel form) is accepted too.
* ``GET|POST /flags/``, ``/decide/`` — an empty, valid feature-flags answer.
* ``GET /array/{token}/config`` and ``/array/{token}/config.js`` — the remote config that
  turns autocapture on (posthog-js keeps autocapture off until a config says
  ``autocapture_opt_out: false``).

Decoding follows PostHog capture (``posthog.md`` §4.3): the raw payload is ``?data=`` or the
body (``Content-Encoding: gzip`` undone first, as HTTP says); a form body
(``application/x-www-form-urlencoded``, posthog-js sendBeacon) yields its ``data`` field, with
the ``+`` that URL-decoding turned into spaces restored when the value is base64; base64 is
decoded when ``compression=base64`` says so or the whole payload is strict base64; gzip is
undone when ``compression=gzip|gzip-js`` says so or the bytes start with ``1f 8b`` (current
posthog-js sends gzip as ``text/plain`` with no parameter). ``lz64`` (very old SDKs) is refused
with a 400 that says so. Sizes are capped before (``RECEIVER_MAX_BODY_BYTES``) and after
(``RECEIVER_MAX_DECOMPRESSED_BYTES``, zip bombs) decompression: 413. The decoded JSON is then
held to the request budgets (receiver.ingest.budget: values counted before parsing, events per
request, values, depth and string length per event), and a body over
``RECEIVER_OFFLOAD_BYTES`` is parsed, normalized and scrubbed off the event loop
(receiver.ingest.offload).

Bodies: one event object, an array of events, or ``{api_key|token, batch, sent_at|sentAt}``.
The token comes from the batch, else from the events (``token``, ``$token``, ``api_key``,
``properties.token``); one request carries one token (else 400). Personal ``phx_`` keys and
unknown tokens are 401. The token maps to a product through ``products.capture_token``.

Event time follows PostHog: ``offset`` (ms before sending) → now − offset; else ``timestamp``
corrected for client clock skew with ``sent_at`` (now + (timestamp − sent_at)) unless
``properties.$ignore_sent_at``; else ``timestamp``; else now; never more than 23 h ahead.

Events then take exactly the webhook's path: ``Limits.check_ingest`` (events and bytes), the
product's privacy policy, then one
``Writer.submit`` for the whole request (committed wholly or not at all), with the same dedup
(posthog-js sends a stable ``uuid``, so its retries are no-ops). The answer is exactly
``200 {"status": 1}``, and only after the commit: posthog-js retries anything else that is not
a 4xx (even 202/204).

Rejecting vs accepting (posthog-js drops a batch for good on any 4xx): only requests that are
malformed as a whole, or that contain an event which cannot be an event at all (not an object,
no ``event`` name, control characters in an identifier), are refused — with a 400 whose detail
names the event's index, because accepting the rest while silently losing one would be worse
for the one sender that can act on a 400 (an SDK author testing). Everything merely odd is
accepted and stored: a missing ``distinct_id`` (stored as NULL), unknown fields, an
unparseable ``timestamp`` or ``sent_at`` (the receive time is used instead). A request over a
budget is refused whole with 413 (``event <i>: …`` when one event is over).

CORS: browsers send these routes cross-origin (the app's origin → the receiver), so every
answer on them — errors included, or the browser hides a 400/401 from posthog-js, which then
retries it as a network error — carries ``Access-Control-Allow-Origin: <Origin>``; ``OPTIONS``
preflights are answered here too. No other route gets CORS headers (:class:`CaptureCORS`).

Config and flags answers are the same for every token, known or not, so they reveal nothing
about which products exist; they read nothing from the database.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.errors import (
    BadRequestError,
    ClientError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from receiver.ingest import normalize, privacy
from receiver.ingest.bodies import gunzip_limited, parse_json, read_limited
from receiver.ingest.budget import DEFAULT as DEFAULT_BUDGET
from receiver.ingest.budget import Budget, check_events, prescan
from receiver.ingest.limits import UNKNOWN_SCOPE
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage.products import ProductAuth
from receiver.storage.store import Pending

router = APIRouter(tags=["capture"])

CAPTURE_PATHS: Final = ("/e", "/i/v0/e", "/batch", "/capture", "/track")
FLAGS_PATHS: Final = ("/flags", "/decide")
MAX_TOKEN_CHARS: Final = 200
SUPPORTED_COMPRESSION: Final = ("gzip", "gzip-js")

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_NAMES = frozenset({"gzip", "gzip-js"})
# One character class, no repeated group: the engine's repeat stack for "(?:[...]{4})*" held
# ~29 bytes per input byte (29 MB for a 1 MB body) before it answered.
_B64_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*")
_LENIENT_B64 = re.compile(rb"[A-Za-z0-9+/\-_]+={0,2}")
# Capture tokens are ``phc_`` + URL-safe characters; anything else cannot be one, and config.js
# embeds the token in JavaScript, so only this alphabet is ever echoed back.
_TOKEN_RE = re.compile(rf"[A-Za-z0-9_\-.]{{1,{MAX_TOKEN_CHARS}}}")
_FORM = "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------- decoding


def _is_strict_base64(data: bytes) -> bool:
    """Padded standard base64: a multiple of 4 characters, at most two ``=`` at the end."""
    data = data.strip()
    if not data or len(data) % 4:
        return False
    body = data.rstrip(b"=")
    # With the length a multiple of 4, "==" and "=" can only close a 2- or 3-character group.
    return len(data) - len(body) <= 2 and bool(body) and _B64_ALPHABET.fullmatch(body) is not None


def _b64decode_lenient(data: bytes) -> bytes:
    """Base64 as clients really send it: spaces for ``+``, URL-safe alphabet, missing padding."""
    data = data.strip().replace(b" ", b"+").replace(b"\n", b"").replace(b"\r", b"")
    if not _LENIENT_B64.fullmatch(data):
        raise BadRequestError("compression=base64 but the payload is not base64")
    data = data.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("compression=base64 but the payload is not base64") from None


def _restore_plus(value: bytes) -> bytes:
    """URL-decoding turns a base64 ``+`` into a space; put it back when that yields base64."""
    if b" " not in value:
        return value
    restored = value.strip().replace(b" ", b"+")
    return restored if _is_strict_base64(restored) else value


def decode_payload(
    raw: bytes,
    *,
    compression: str,
    content_type: str,
    content_encoding: str,
    from_query: bool,
    max_decompressed: int,
) -> bytes:
    """The JSON bytes inside one capture request, in PostHog capture's decoding order.

    ``raw`` is the ``?data=`` value (``from_query``) or the body; ``compression`` is the query
    parameter (a form body's own ``compression`` field overrides it).
    """
    compression = compression.strip().lower()
    gunzipped = False
    encoding = content_encoding.strip().lower()
    if not from_query and encoding in ("gzip", "x-gzip"):
        # HTTP content coding wraps the body itself: undo it before looking inside (Node/Python SDKs).
        raw = gunzip_limited(raw, max_decompressed)
        gunzipped = True
    elif not from_query and encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported; use gzip")

    data = raw
    if from_query:
        data = _restore_plus(data)
    elif content_type == _FORM:
        fields = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        form = dict(fields)
        if "data" not in form:
            raise BadRequestError("form body has no 'data' field")
        data = _restore_plus(form["data"].encode("utf-8"))
        compression = (form.get("compression") or compression).strip().lower()

    if compression == "lz64":
        raise BadRequestError(
            "compression=lz64 is not supported; use a posthog-js from 2021 or later (gzip)"
        )
    if compression == "base64":
        data = _b64decode_lenient(data)
    elif _is_strict_base64(data):
        data = base64.b64decode(data.strip())

    if data[:2] == _GZIP_MAGIC or (compression in _GZIP_NAMES and not gunzipped):
        data = gunzip_limited(data, max_decompressed)

    # Legacy endpoints: base64 inside the compression layer; JSON never looks like base64.
    if _is_strict_base64(data):
        data = base64.b64decode(data.strip())
    if len(data) > max_decompressed:
        raise PayloadTooLargeError(
            f"decoded body is larger than {max_decompressed} bytes (RECEIVER_MAX_DECOMPRESSED_BYTES)"
        )
    return data


# --------------------------------------------------------------------------- body shapes


@dataclass(frozen=True, slots=True)
class CaptureBatch:
    events: list[dict[str, Any]]
    token: str
    sent_at: object


def _event_token(event: Mapping[str, Any]) -> object:
    for key in ("token", "$token", "api_key"):
        if event.get(key):
            return event[key]
    props = event.get("properties")
    return props.get("token") if isinstance(props, dict) else None


def parse_body(body: object, budget: Budget = DEFAULT_BUDGET) -> CaptureBatch:
    """Events, their one shared token and the batch's ``sent_at`` from a decoded body."""
    batch_token: object = None
    sent_at: object = None
    if isinstance(body, list):
        events: object = body
    elif isinstance(body, dict) and "batch" in body:
        events = body["batch"]
        if not isinstance(events, list):
            raise BadRequestError("'batch' must be an array of events")
        batch_token = body.get("api_key") or body.get("token")
        sent_at = body.get("sent_at") or body.get("sentAt")
    elif isinstance(body, dict):
        events = [body]
    else:
        raise BadRequestError(
            f"expected an event object, an array of events or {{api_key, batch}}, "
            f"got {type(body).__name__}"
        )
    assert isinstance(events, list)
    if not events:
        raise BadRequestError("the request contains no events")
    check_events(len(events), budget)
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadRequestError(f"event {i}: expected a JSON object, got {type(event).__name__}")

    tokens = [batch_token] if batch_token else []
    tokens += [t for t in (_event_token(e) for e in events) if t]
    if not tokens:
        raise UnauthorizedError(
            "missing project token: send the product's capture_token as api_key (or token)"
        )
    for t in tokens:
        if not isinstance(t, str):
            raise BadRequestError("api_key/token must be a string")
        if t.startswith("phx_"):
            raise UnauthorizedError(
                "phx_ personal API keys cannot send events; use the product's capture_token "
                "(phc_...) as the posthog-js project key"
            )
    if len(set(tokens)) > 1:
        raise BadRequestError("all events in one request must carry the same token")
    return CaptureBatch(events=events, token=tokens[0], sent_at=sent_at)


# --------------------------------------------------------------------------- timestamps


def parse_instant(value: object) -> datetime | None:
    """ISO 8601, or epoch seconds/ms as a number or a numeric string (``?sent_at=<ms>``)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return normalize.parse_timestamp(value, received_at=datetime.min)
    except (OverflowError, ValueError):
        return None


def resolve_timestamp(
    event: Mapping[str, Any], *, now: datetime, sent_at: datetime | None
) -> datetime:
    """When the event happened, by PostHog capture's rules (see the module docstring)."""
    props = event.get("properties")
    props = props if isinstance(props, dict) else {}
    offset = event.get("offset")
    ts: datetime | None = None
    try:
        if isinstance(offset, int | float) and not isinstance(offset, bool) and math.isfinite(offset):
            ts = now - timedelta(milliseconds=offset)
        else:
            stamp = parse_instant(event.get("timestamp"))
            sent = parse_instant(event.get("sent_at")) or sent_at
            if stamp is not None and sent is not None and props.get("$ignore_sent_at") not in (
                True, "true",
            ):
                # The client's clock may be off; its own difference between event and send
                # time is not, so anchor that difference to our clock.
                ts = now + (stamp - sent)
            else:
                ts = stamp
    except OverflowError:
        ts = None
    if ts is None or ts > now + normalize.FUTURE_CLAMP:
        return now
    return ts


# --------------------------------------------------------------------------- handlers


async def _product_for(rt: Runtime, request: Request, token: str) -> ProductAuth:
    if not _TOKEN_RE.fullmatch(token):
        rt.limits.auth_failed(request, UNKNOWN_SCOPE)
        raise UnauthorizedError("unknown capture token")
    product = await rt.find_capture_token(request, token)
    if product is None:
        raise UnauthorizedError(
            "unknown capture token: use the capture_token that `receiver product show` prints"
        )
    return product


async def _raw_payload(request: Request, limit: int, body_seconds: float) -> tuple[bytes, bool]:
    data = request.query_params.get("data")
    if data is not None:
        raw = data.encode("utf-8")
        if len(raw) > limit:
            raise PayloadTooLargeError(
                f"data parameter is larger than {limit} bytes (RECEIVER_MAX_BODY_BYTES)"
            )
        return raw, True
    if request.method == "GET":
        raise BadRequestError("GET capture needs a ?data= parameter; POST the events instead")
    return await read_limited(request, limit, body_seconds), False


def parse_payload(data: bytes, budget: Budget) -> CaptureBatch:
    """Decoded bytes → events and token: values counted before parsing (CPU only)."""
    prescan(data, budget)
    return parse_body(parse_json(data), budget)


def decode_and_parse(raw: bytes, budget: Budget, **decoding: Any) -> tuple[CaptureBatch, int]:
    """:func:`decode_payload` then :func:`parse_payload`; also the decoded size."""
    data = decode_payload(raw, **decoding)
    return parse_payload(data, budget), len(data)


def prepare_events(
    batch: CaptureBatch,
    product: ProductAuth,
    *,
    now: datetime,
    sent_at: datetime | None,
    received: list[datetime],
    budget: Budget,
    hash_key: bytes | None,
) -> list[Pending]:
    """Every event of a request normalized and scrubbed by its product's policy (CPU only)."""
    policy = product.policy
    pending: list[Pending] = []
    for i, (event, received_at) in enumerate(zip(batch.events, received, strict=True)):
        occurred = resolve_timestamp(event, now=now, sent_at=sent_at)
        try:
            normalized = normalize.from_capture(
                event, received_at=received_at, timestamp=occurred, budget=budget
            )
        except ClientError as exc:
            raise type(exc)(f"event {i}: {exc.detail}") from None
        pending.append(Pending(
            product.product_id, received_at, privacy.apply(policy, normalized, hash_key), policy
        ))
    return pending


async def capture(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    now = rt.writer.clock.now()
    settings = rt.settings
    raw, from_query = await _raw_payload(
        request, settings.max_body_bytes, settings.body_timeout_seconds
    )
    params = request.query_params
    decoding: dict[str, Any] = dict(
        compression=params.get("compression") or "",
        content_type=(request.headers.get("content-type") or "").split(";", 1)[0].strip().lower(),
        content_encoding=request.headers.get("content-encoding") or "",
        from_query=from_query,
        max_decompressed=settings.max_decompressed_bytes,
    )
    if rt.offload.inline(len(raw)):
        # Inflating a small body is quick C work (at most RECEIVER_MAX_DECOMPRESSED_BYTES out);
        # what follows goes off the loop if what came out is large.
        data = decode_payload(raw, **decoding)
        size = len(data)
        batch = await rt.offload.run(size, parse_payload, data, rt.budget)
        del data
    else:
        batch, size = await rt.offload.run(len(raw), decode_and_parse, raw, rt.budget, **decoding)
    del raw
    product = await _product_for(rt, request, batch.token)
    rt.limits.check_ingest(product.product_id, len(batch.events), size)

    sent_at = parse_instant(batch.sent_at) or parse_instant(
        params.get("sent_at") or params.get("_")
    )
    # One receive time per event, taken here on the loop (the clock is not thread-safe): it is
    # also the frame's forwarded_at, which the SDK expects to be unique within a session.
    received = [rt.writer.clock.now() for _ in batch.events]
    pending = await rt.offload.run(
        size, prepare_events, batch, product, now=now, sent_at=sent_at, received=received,
        budget=rt.budget, hash_key=settings.hash_key_bytes(),
    )
    del batch
    await rt.writer.submit(pending)
    return json_response({"status": 1})


def remote_config(token: str) -> dict[str, Any]:
    """``/array/<token>/config``: autocapture on, everything that needs PostHog's cloud off."""
    return {
        "token": token,
        "supportedCompression": list(SUPPORTED_COMPRESSION),
        "hasFeatureFlags": False,
        "autocapture_opt_out": False,
        "autocaptureExceptions": False,
        "capturePerformance": False,
        "captureDeadClicks": False,
        "heatmaps": False,
        "sessionRecording": False,
        "surveys": False,
        "defaultIdentifiedOnly": True,
        # Send only the $elements_chain string, not the $elements array too (half the bytes);
        # the receiver parses the chain.
        "elementsChainAsString": True,
    }


FLAGS_RESPONSE: Final[dict[str, Any]] = {
    "flags": {},
    "featureFlags": {},
    "featureFlagPayloads": {},
    "errorsWhileComputingFlags": False,
    "quotaLimited": [],
    "requestId": "00000000-0000-0000-0000-000000000000",
    # /decide-era clients read their config from this answer too.
    "config": {"enable_collect_everything": True},
    "toolbarParams": {},
    "isAuthenticated": False,
    "siteApps": [],
    **{k: v for k, v in remote_config("").items() if k != "token"},
}
_NO_CACHE = {"Cache-Control": "no-cache"}


async def flags(request: Request) -> Response:
    # The same answer for every token and body: there are no flags, and nothing is revealed.
    return json_response(FLAGS_RESPONSE, headers=_NO_CACHE)


def _config_token(token: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise BadRequestError("invalid project token")
    return token


async def config_json(token: str) -> Response:
    return json_response(remote_config(_config_token(token)), headers=_NO_CACHE)


async def config_js(token: str) -> Response:
    token = _config_token(token)
    key = orjson.dumps(token).decode()
    config = orjson.dumps(remote_config(token)).decode()
    body = (
        "window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
        f"window._POSTHOG_REMOTE_CONFIG[{key}] = {{config: {config}, siteApps: []}};\n"
    )
    return Response(body, media_type="application/javascript; charset=utf-8", headers=_NO_CACHE)


def _both(path: str) -> tuple[str, str]:
    return (path + "/", path)


_CAPTURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": 'Committed (duplicates included): exactly {"status": 1}.'},
    400: {"description": "Undecodable body, bad shape, mixed tokens, or a malformed event."},
    401: {"description": "Missing, unknown or personal (phx_) token."},
    408: {"description": "Body not received within RECEIVER_BODY_TIMEOUT_SECONDS."},
    413: {"description": "Body, decoded body, event count or a JSON budget over its limit."},
    415: {"description": "Unsupported Content-Encoding."},
    429: {"description": "Rate limited; retry after Retry-After seconds."},
    503: {"description": "Database unavailable or shutting down; retry."},
}

# One route per method, each with its own operation id: a shared id makes the OpenAPI
# document ambiguous for clients generated from it.
for _base in CAPTURE_PATHS:
    for _path in _both(_base):
        for _method in ("POST", "GET"):
            router.add_api_route(
                _path, capture, methods=[_method], responses=_CAPTURE_RESPONSES,
                include_in_schema=_path.endswith("/"), name=f"capture {_method} {_path}",
                operation_id=f"capture_{_method.lower()}_{_base.strip('/').replace('/', '_')}",
            )
for _base in FLAGS_PATHS:
    for _path in _both(_base):
        for _method in ("GET", "POST"):
            router.add_api_route(
                _path, flags, methods=[_method], include_in_schema=_path.endswith("/"),
                name=f"flags {_method} {_path}",
                operation_id=f"flags_{_method.lower()}_{_base.strip('/')}",
            )
_CONFIG_400 = {400: {"description": "The token has characters a project token never has."}}
router.add_api_route(
    "/array/{token}/config", config_json, methods=["GET"], responses=_CONFIG_400,
    operation_id="remote_config",
)
router.add_api_route(
    "/array/{token}/config.js", config_js, methods=["GET"], response_class=Response,
    responses={
        200: {"content": {"application/javascript": {}}, "description": "The config as a script."},
        **_CONFIG_400,
    },
    operation_id="remote_config_js",
)


# --------------------------------------------------------------------------- CORS

_CORS_EXACT: Final = frozenset(p for base in CAPTURE_PATHS + FLAGS_PATHS for p in _both(base))
_CORS_CONFIG = re.compile(r"/array/[^/]+/config(?:\.js)?")
CORS_METHODS: Final = "POST, GET, OPTIONS"


def is_cors_path(path: str) -> bool:
    return path in _CORS_EXACT or _CORS_CONFIG.fullmatch(path) is not None


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": "Content-Type",
    }


class CaptureCORS:
    """CORS for the capture, flags and config routes only; every other route is untouched.

    A pure ASGI middleware rather than Starlette's CORSMiddleware, which applies to the whole
    app: the webhook, stream and products routes must not be callable from browsers. It sits
    outside the exception handlers, so 4xx answers carry the headers too. Requests never carry
    credentials, so the Origin is reflected without ``Allow-Credentials``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_cors_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if scope["method"] == "OPTIONS":
            headers = {"Allow": CORS_METHODS, "Vary": "Origin"}
            if origin is not None:
                headers.update(_cors_headers(origin))
                headers["Access-Control-Max-Age"] = "86400"  # one preflight a day per page
            await Response(status_code=204, headers=headers)(scope, receive, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_cors(send, origin))


def _with_cors(send: Send, origin: str) -> Callable[[Message], Awaitable[None]]:
    extra = _cors_headers(origin)

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in extra.items():
                headers[name] = value
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors
