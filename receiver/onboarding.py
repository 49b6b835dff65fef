"""``POST /products``: what ``autoplay_sdk.admin.onboard_product`` (0.7.2) calls, unmodified.

The SDK sends no credentials, so by default only loopback callers (with no proxy forwarding
headers, which would mean the real caller is elsewhere) or holders of
``Authorization: Bearer $RECEIVER_ADMIN_TOKEN`` may register products; anyone else gets 403.
Success is exactly 201 — the SDK treats even a 200 as a failure.

Push mode (``integration_config: {"mode": "push", "url", "secret"}``, or ``forward_url`` /
``forward_secret``; see ``receiver.delivery.push.destination``) creates or updates the
product's push endpoint in the same transaction as the product. The URL is validated here
(http(s), ``RECEIVER_PUSH_ALLOWED_HOSTS``); ``products.integration_config`` keeps neither the
secret nor the URL's credentials. A secret the receiver had to generate is in the answer, once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from receiver import apidoc, security
from receiver.delivery.push import destination, outbox
from receiver.errors import BadRequestError, ForbiddenError
from receiver.ingest import privacy
from receiver.responses import json_response
from receiver.runtime import Runtime
from receiver.storage import products, store

router = APIRouter(tags=["products"])
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


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


def require_admin(request: Request, authorization: str | None) -> None:
    rt: Runtime = request.app.state.runtime
    token = rt.settings.admin_token
    if token is not None and security.equals(
        security.bearer_token(authorization), token.get_secret_value()
    ):
        return
    host = request.client.host if request.client else None
    proxied = any(h in request.headers for h in FORWARDING_HEADERS)
    if rt.settings.admin_allow_loopback and security.is_loopback(host) and not proxied:
        return
    raise ForbiddenError(
        "product registration is only open to loopback clients or to "
        "'Authorization: Bearer <RECEIVER_ADMIN_TOKEN>'"
    )


@router.post(
    "/products",
    status_code=201,
    responses={
        201: {
            "model": apidoc.Registered,
            "description": "Registered (or re-registered with rotated credentials).",
        },
        400: apidoc.error("Invalid product_id or contact_email."),
        403: apidoc.error("Not a loopback client and no valid admin token."),
        409: apidoc.error("Already registered and force_reregister is false."),
        503: apidoc.error("Database unavailable or shutting down; retry."),
    },
)
async def register(
    body: RegisterProduct,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    rt: Runtime = request.app.state.runtime
    rt.refuse_if_shutting_down()
    require_admin(request, authorization)
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
    out = issued.as_dict(rt.settings.base_url() if rt.settings.public_url else _base(request))
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


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")
