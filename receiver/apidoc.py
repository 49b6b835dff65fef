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
    """A 200 from the webhook: the event is committed (or was already, ``duplicate``)."""

    status: Literal["ok"]
    duplicate: bool
    position: int | None = Field(
        default=None, description="Stream position of the new event; absent for a duplicate."
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

WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
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
            }
        },
    }
}
