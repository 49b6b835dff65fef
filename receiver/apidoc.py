"""Response and request shapes for the OpenAPI document (documentation only).

The handlers build their JSON by hand (``responses.json_response``) for speed; these models
only describe it, so that ``/openapi.json`` tells clients — and the Schemathesis conformance
test — exactly what every status code carries.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every 4xx and 503 answer: a human ``detail`` and a stable ``code``."""

    detail: str
    code: str


class WebhookAck(BaseModel):
    """A 200 from the webhook or ingest: the events are committed (or were already)."""

    status: Literal["ok"]
    duplicate: bool = Field(description="True when nothing new was stored (all duplicates).")
    position: int | None = Field(
        default=None,
        description="Stream position of the (last) new event; absent when nothing new was stored.",
    )
    stored: int | None = Field(
        default=None, description="For a batch: how many of its events were new."
    )
    duplicates: int | None = Field(
        default=None, description="For a batch: how many were already stored."
    )


class Registered(BaseModel):
    """What ``autoplay_sdk.admin.onboard_product`` reads back (secrets are shown only here)."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    webhook_url: str
    stream_url: str
    capture_url: str
    capture_token: str
    webhook_secret: str | None = None
    stream_key: str | None = None
    unkey_key: str | None = None
    unkey_key_id: str | None = None
    integration_type: str
    push: dict[str, str] | None = Field(
        default=None,
        description="Push mode: the destination (redacted) and, only when the receiver "
        "generated it, the signing secret (shown this once).",
    )
    session_link: str | None = Field(
        default=None, description="Who may call POST /sessions/link, when the request set it."
    )


class ProjectCredentials(BaseModel):
    """Secrets of a product registered by project id, shown only in this answer."""

    model_config = ConfigDict(extra="allow")

    ingest_secret: str = Field(description="What the activity provider sends to ingest_url.")
    mcp_key: str = Field(description="Bearer key of the agents' reads (REST live activity, MCP).")
    owner_token: str | None = Field(
        default=None, description="Only on first registration: keep it to rotate later."
    )
    stream_key: str = Field(description="Bearer key of GET /stream/{product_id}.")
    capture_token: str = Field(description="Public token posthog-js sends to the capture API.")


class ProjectSetup(BaseModel):
    """Where each path is, and how to authenticate on it."""

    model_config = ConfigDict(extra="allow")

    ingest_url: str
    ingest_auth: str
    mcp_url: str
    mcp_auth: str
    live_activity_url: str
    stream_url: str
    webhook_url: str
    capture_url: str


class RegisteredProject(BaseModel):
    """What autoplay-sdk 0.13.0's ``onboard_product`` reads back (``_aws_result_from_response``)."""

    model_config = ConfigDict(extra="allow")

    product_id: str = Field(description="The issued, opaque id (prod_…).")
    provider: str
    provider_project_id: str
    name: str
    created: bool = Field(description="False when an existing registration was rotated.")
    credentials: ProjectCredentials
    setup: ProjectSetup


class LiveActivity(BaseModel):
    """One user's recent actions, oldest first, in the SlimAction shape of the stream frames."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    user_id: str
    actions: list[dict[str, Any]] = Field(
        description="title, description, canonical_url, type, timestamp_start, timestamp_end, "
        "session_id, ... (the SDK's SlimAction), oldest first."
    )
    count: int
    limit: int = Field(description="The most actions this answer could hold.")
    since_seconds: int = Field(description="How far back it looked.")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` resolved in place, for ``openapi_extra`` (whose
    schemas cannot carry ``$defs``: their refs would resolve against the document root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


class Health(BaseModel):
    status: str


class Standby(BaseModel):
    name: str | None = None
    state: str | None = None
    sync_state: str | None = None
    flush_lag_bytes: int | None = None
    replay_lag_bytes: int | None = None
    replay_lag_seconds: float | None = None
    visible: bool = True


class DatabaseTopology(BaseModel):
    server: str
    role: str
    synchronous_standby_names: str
    synchronous_commit: str
    sync_required: bool
    sync_standbys: int
    commit_waits_for: str
    standbys: list[Standby] = []


class Readiness(BaseModel):
    status: str
    migration: str | None = None
    detail: str | None = None
    database: DatabaseTopology | None = None


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


def ingest_responses(*, bad_body: str, unauthorized: str) -> dict[int | str, dict[str, Any]]:
    """The answers of the routes that store events (webhook, ingest): they share one pipeline."""
    return {
        200: {
            "model": WebhookAck,
            "description": "Committed (or duplicates of events already committed).",
        },
        400: error(bad_body),
        401: error(unauthorized),
        404: error("Unknown product."),
        408: error("Body not received within RECEIVER_BODY_TIMEOUT_SECONDS."),
        413: error(
            "Body over RECEIVER_MAX_BODY_BYTES, over RECEIVER_MAX_EVENTS_PER_REQUEST events, or "
            "over a JSON budget."
        ),
        415: error("Content type is not JSON."),
        429: error("Rate limited; retry after Retry-After seconds."),
        503: error("Database unavailable or shutting down; retry."),
    }


# The body a Hog destination posts (the tutorial's flat payload). Documentation for clients and
# for generated tests; the handler reads the raw bytes itself (size cap first, then JSON).
_ID = {"type": ["string", "null"], "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
_TEXT = {"type": ["string", "null"]}
# What FastAPI generated when ``webhook`` declared ``product_id: str`` and
# ``x_posthog_secret: Header()`` (including its 422), kept verbatim so the OpenAPI document
# does not change.
WEBHOOK_PARAMETERS: dict[str, Any] = {"parameters": [
    {
        "name": "product_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Product Id"},
    },
    {
        "name": "x-posthog-secret",
        "in": "header",
        "required": False,
        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Posthog-Secret"},
    },
], "responses": {"422": {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}}}

_HOG_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event"],
    "additionalProperties": True,
    "properties": {
        "event": {"type": "string", "minLength": 1, "maxLength": 200,
                  "pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"},
        "uuid": {"type": ["string", "null"], "format": "uuid"},
        "distinct_id": _ID,
        "session_id": _ID,
        "email": _TEXT,
        "timestamp": _TEXT,
        "event_type": _TEXT,
        "current_url": _TEXT,
        "referrer": _TEXT,
        "elements_chain": _TEXT,
        "element_id": _TEXT,
        "input_field_name": _TEXT,
        "link_destination": _TEXT,
        "button_or_link_text": _TEXT,
    },
}
# A PostHog batch: every element is its own event; the request commits wholly or not at all.
_BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "additionalProperties": True,
    "properties": {"batch": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": _HOG_EVENT}},
}
# Amplitude Event Streaming, shaped by autoplay-sdk 0.13.0's Freemarker template.
_AMPLITUDE: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": True,
    "properties": {"events": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": {
        "type": "object",
        "required": ["event_type"],
        "additionalProperties": True,
        "properties": {
            "event_type": {"type": "string", "minLength": 1, "maxLength": 200,
                           "pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"},
            "user_id": _ID,
            "device_id": _ID,
            "session_id": {"type": ["integer", "string", "null"]},
            "time": {"type": ["integer", "null"]},
            "event_time": _TEXT,
            "event_properties": {"type": "object", "additionalProperties": True},
            "user_properties": {"type": "object", "additionalProperties": True},
        },
    }}},
}


def _body(*shapes: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": shapes[0] if len(shapes) == 1 else {"anyOf": list(shapes)}
    }}}}


WEBHOOK_BODY: dict[str, Any] = _body(_HOG_EVENT, _BATCH)
INGEST_BODY: dict[str, Any] = _body(_HOG_EVENT, _BATCH, _AMPLITUDE)
INGEST_PARAMETERS: dict[str, Any] = {"parameters": [
    {"name": "product_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "x-posthog-secret", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "The ingest secret (what PostHog's destination sends)."},
    {"name": "authorization", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Bearer <ingest secret> (what Amplitude sends), when x-posthog-secret is absent."},
]}

AMPLITUDE_PARAMETERS: dict[str, Any] = {"parameters": [
    {"name": "product_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "authorization", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "Bearer <ingest secret>, as Amplitude's Event Streaming destination sends it."},
]}
