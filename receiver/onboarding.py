"""``POST /products``: what the stock ``autoplay_sdk`` onboarding calls, unmodified.

Two body shapes, told apart by their keys:

* ``{"product_id", "contact_email", ...}``: autoplay-sdk 0.7.2's ``onboard_product`` (and 0.13.0's
  legacy ``autoplay_sdk.admin.onboard.onboard_product``). The caller names the product; 409 on a
  duplicate unless ``force_reregister`` (which rotates every credential).
* ``{"provider", "provider_project_id", "contact_email", ...}``: 0.13.0's ``onboard_product``
  (registration by PostHog/Amplitude project id). We issue an opaque ``prod_…`` id and an
  ``owner_token`` (once); the same project again is 403 without that token and rotates every
  credential with it. The answer is the nested ``credentials`` / ``setup`` body that SDK reads.

Either way the product gets every credential (ingest/webhook secret, stream key, MCP key,
capture token), so it can use every path. The SDK sends no credentials, so by default only
trusted local callers (a loopback peer with no proxy forwarding headers, a local ``Host`` and no
foreign ``Origin``: receiver.security) or holders of ``Authorization: Bearer
$RECEIVER_ADMIN_TOKEN`` may register products; anyone else gets 403. The URLs in the answer come
from ``RECEIVER_PUBLIC_URL`` or a local ``Host`` only. Success is exactly 201 — the SDK treats
even a 200 as a failure.

Push mode (``integration_config: {"mode": "push", "url", "secret"}``, or ``forward_url`` /
``forward_secret``; see ``receiver.delivery.push.destination``) creates or updates the
product's push endpoint in the same transaction as the product. The URL is validated here
(http(s), ``RECEIVER_PUSH_ALLOWED_HOSTS``); ``products.integration_config`` keeps neither the
secret nor the URL's credentials. A secret the receiver had to generate is in the answer, once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from receiver import apidoc, security
from receiver.delivery.push import destination, outbox
from receiver.errors import BadRequestError, ForbiddenError
from receiver.ingest import privacy
from receiver.ingest.bodies import parse_json, read_limited, require_json_content_type
from receiver.ops import admin
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.settings import Settings
from receiver.storage import products, store

router = APIRouter(tags=["products"])


class RegisterProduct(BaseModel):
    model_config = ConfigDict(extra="allow")

    # The patterns document what products.validate_product_id/validate_email enforce (400).
    product_id: str = Field(
        min_length=1, max_length=128,
        json_schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"},
    )
    contact_email: str = Field(
        min_length=3, max_length=320,
        json_schema_extra={"pattern": r"^[^@\s]{1,200}@[^@\s]{1,200}\.[^@\s]{1,63}$"},
    )
    webhook_secret: str | None = Field(default=None, max_length=512)
    integration_type: str = Field(default="event_stream", max_length=64)
    integration_config: dict[str, Any] | None = None
    force_reregister: bool = False
    # Optional (the SDK never sends it): {"email": "keep|hash|drop", "query": "keep|strip",
    # "builtin_redactions": [...], "redact": [regex, ...]}. Omitted on re-registration = keep.
    privacy_policy: dict[str, Any] | None = None
    # Optional (the SDK never sends it): who may call POST /sessions/link for this product.
    # Omitted on re-registration = keep.
    session_link: Literal["token", "open", "off"] | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Postgres text and jsonb cannot hold U+0000, and orjson (which writes the jsonb) stops
        # at 64-bit integers: refuse such values here with a 400, not in the INSERT with a 503.
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError:
            raise ValueError("numbers must fit in 64 bits") from None
        if b"\\u0000" in encoded:
            raise ValueError("must not contain NUL characters")
        return value


class RegisterProject(BaseModel):
    """autoplay-sdk 0.13.0's body (``build_aws_register_payload``): no product id, we issue one."""

    model_config = ConfigDict(extra="allow")

    provider: str = Field(
        description="posthog or amplitude.", json_schema_extra={"enum": list(products.PROVIDERS)}
    )
    provider_project_id: str = Field(
        min_length=1, max_length=products.MAX_PROJECT_ID_CHARS,
        description="Your PostHog or Amplitude project id.",
    )
    contact_email: str = Field(
        min_length=3, max_length=320,
        json_schema_extra={"pattern": r"^[^@\s]{1,200}@[^@\s]{1,200}\.[^@\s]{1,63}$"},
    )
    ingest_secret: str | None = Field(
        default=None, max_length=512,
        description="Preset ingest secret (32+ characters); one is minted when omitted or weaker.",
    )
    owner_token: str | None = Field(
        default=None, max_length=512,
        description="The owner token of the first registration: required to re-register (rotate).",
    )
    name: str | None = Field(default=None, max_length=products.MAX_NAME_CHARS)

    _storable = RegisterProduct._storable


def _parse_body(data: object) -> RegisterProduct | RegisterProject:
    if not isinstance(data, dict):
        raise BadRequestError(f"expected a JSON object, got {type(data).__name__}")
    by_project = "product_id" not in data and ("provider_project_id" in data or "provider" in data)
    model: type[BaseModel] = RegisterProject if by_project else RegisterProduct
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        # Same 400 (first error, field named) as FastAPI's own body validation.
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def require_admin(request: Request, authorization: str | None) -> None:
    rt: Runtime = request.app.state.runtime
    rt.limits.check_auth_block(request, admin.AUTH_SCOPE)
    if admin.is_admin(request, authorization):
        return
    rt.limits.auth_failed(request, admin.AUTH_SCOPE)
    raise ForbiddenError(
        "product registration is only open to trusted loopback clients (no proxy headers, a "
        "local Host, no foreign Origin) or to 'Authorization: Bearer <RECEIVER_ADMIN_TOKEN>'"
    )


@router.post(
    "/products",
    status_code=201,
    responses={
        201: {
            "content": {"application/json": {"schema": {"anyOf": [
                apidoc.inline_schema(apidoc.Registered),
                apidoc.inline_schema(apidoc.RegisteredProject),
            ]}}},
            "description": "Registered (or re-registered with rotated credentials): the 0.7.2 "
            "answer for a product_id body, the nested 0.13.0 one for a provider_project_id body.",
        },
        400: apidoc.error("Invalid body, product_id, provider, project id or contact_email."),
        403: apidoc.error(
            "Not a loopback client and no valid admin token; or the project is registered "
            "and no valid owner_token was given."
        ),
        409: apidoc.error("Already registered and force_reregister is false (or a concurrent "
                          "first registration of the same project)."),
        413: apidoc.error("Body over RECEIVER_MAX_BODY_BYTES."),
        415: apidoc.error("Content type is not JSON."),
        503: apidoc.error("Database unavailable or shutting down; retry."),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        # anyOf: a body with product_id is the 0.7.2 shape whatever else it carries.
        "anyOf": [apidoc.inline_schema(RegisterProduct), apidoc.inline_schema(RegisterProject)]
    }}}}},
)
async def register(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    require_admin(request, request.headers.get("authorization"))
    raw = await read_limited(request, rt.settings.max_body_bytes, rt.settings.body_timeout_seconds)
    require_json_content_type(request.headers.get("content-type"))
    parse_json(raw)  # its 400s for bad JSON (and it refuses NaN, which the stdlib would take)
    # Parsed again by the stdlib, which keeps integers exact: orjson would round one past 64 bits
    # into a float and store it changed, where the validators refuse it with a 400.
    body = _parse_body(json.loads(raw))
    if isinstance(body, RegisterProject):
        return await _register_project(rt, request, body)
    policy = None
    if body.privacy_policy is not None:
        policy = privacy.Policy.from_json(body.privacy_policy)
        if policy.needs_hash_key and rt.settings.pii_hash_key is None:
            raise BadRequestError(
                "privacy_policy.email 'hash' needs RECEIVER_PII_HASH_KEY set on the receiver"
            )
    target = destination.from_registration(
        body.integration_type, body.integration_config, body.model_extra or {}
    )
    if target is not None:
        destination.validate_url(
            target.url, destination.parse_allowed_hosts(rt.settings.push_allowed_hosts)
        )
    generated: str | None = None
    with store.unavailable("registering the product"):
        async with rt.pool.acquire() as conn, conn.transaction():
            issued = await products.create(
                conn,
                body.product_id,
                contact_email=body.contact_email,
                webhook_secret=body.webhook_secret,
                integration_type=body.integration_type,
                integration_config=destination.stored_config(body.integration_config, target),
                force=body.force_reregister,
                grace_seconds=rt.settings.secret_grace_seconds,
                privacy_policy=policy,
            )
            if target is not None:
                generated = await outbox.configure(
                    conn, body.product_id, target, grace_seconds=rt.settings.secret_grace_seconds
                )
            else:
                await outbox.remove(conn, body.product_id)
            if body.session_link is not None:
                await products.set_session_link(conn, body.product_id, body.session_link)
    rt.directory.invalidate(body.product_id)
    out = issued.as_dict(base_url(rt.settings, request))
    out["integration_type"] = body.integration_type
    if policy is not None:
        out["privacy_policy"] = policy.to_json()
    if target is not None:
        out["push"] = {"url": destination.redact_url(target.url)}
        if generated is not None:
            out["push"]["secret"] = generated
    if body.session_link is not None:
        out["session_link"] = body.session_link
    return json_response(out, 201)


def base_url(settings: Settings, request: Request) -> str:
    """Where the URLs in an answer point: ``RECEIVER_PUBLIC_URL``, else the request's own base
    when its Host names this machine, else the configured host and port. Never a Host the
    caller made up: a token holder behind a proxy, or a rebinding page, would receive webhook
    and stream URLs on an attacker's domain."""
    if settings.public_url:
        return settings.base_url()
    host = security.split_host(request.headers.get("host"))
    if host is not None and security.local_host(host[0]):
        return str(request.base_url).rstrip("/")
    # The address this connection reached: one of this machine's own.
    server = request.scope.get("server")
    if server and server[1]:
        address = f"[{server[0]}]" if ":" in server[0] else server[0]
        return f"{request.url.scheme}://{address}:{server[1]}"
    return settings.base_url()
async def _register_project(rt: Runtime, request: Request, body: RegisterProject) -> Response:
    with store.unavailable("registering the product"):
        async with rt.pool.acquire() as conn:
            registration = await products.register_by_project(
                conn,
                provider=body.provider,
                provider_project_id=body.provider_project_id,
                contact_email=body.contact_email,
                name=body.name,
                ingest_secret=body.ingest_secret,
                owner_token=body.owner_token,
                grace_seconds=rt.settings.secret_grace_seconds,
            )
    rt.directory.invalidate(registration.issued.product_id)
    return json_response(registration.as_dict(base_url(rt.settings, request)), 201)

