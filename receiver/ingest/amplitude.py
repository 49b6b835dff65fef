"""Amplitude Event Streaming events → :class:`NormalizedEvent` (pure: no I/O, no clock).

Amplitude's HTTP destination posts ``{"events": [...]}`` with ``Authorization: Bearer
<ingest_secret>``; each event is shaped by the Freemarker template of autoplay-sdk 0.13.0
(``skills/activity-amplitude/SKILL.md``), which already maps Amplitude's names onto PostHog's:

* ``event_type``: ``$pageview`` (page views), ``$autocapture`` (element clicked/changed, form
  events) or the event's own name (custom events, stored as ``custom``);
* ``user_id`` (set by ``amplitude.setUserId``), ``device_id``, ``session_id`` (a number, ``-1``
  before Amplitude has a session), ``time`` (epoch ms), ``event_time``;
* ``event_properties``: ``$event_type`` (click/change/submit/focus), ``$current_url`` (and
  ``[Amplitude] Page URL``), ``$button_text``, ``$element_id``, ``$element_tag``,
  ``$elements_chain`` (Amplitude's CSS-like element path, *not* PostHog's chain format: kept in
  the payload, never parsed), plus the event's own properties;
* ``user_properties``: ``email``, ``name``, … as set with ``amplitude.identify``.

Who: ``user_id``, else ``device_id`` (an anonymous visitor is still one person). Which session:
``session_id``, except ``-1`` and missing/0 (what the template sends without one), which fall back
to ``device_id`` as the hosted connector does. The template sends no event uuid, so retries of the
same event deduplicate by a hash of the event itself (its time is in milliseconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from receiver.errors import BadRequestError
from receiver.ingest import budget as budgets
from receiver.ingest import normalize
from receiver.ingest.elements import target_from_parts
from receiver.ingest.normalize import NormalizedEvent

SOURCE = "amplitude"
# Amplitude's form-start is the first interaction with a field: the closest of our action types is
# "type" (Amplitude reports no separate focus action that an agent could act on).
_EVENT_TYPES = {"focus": "change"}


def _props(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _session(value: object, device_id: object) -> object:
    """The session id as text; Amplitude's "no session" (-1, 0, missing) → the device id."""
    if isinstance(value, bool):
        return device_id
    if isinstance(value, int | float):
        if value in (-1, 0) or value != value:  # NaN compares unequal to itself
            return device_id
        return str(int(value)) if float(value).is_integer() else repr(value)
    if isinstance(value, str) and value.strip() not in ("", "-1", "0"):
        return value
    return device_id


def _first(props: Mapping[str, Any], *keys: str) -> object:
    for key in keys:
        value = props.get(key)
        if value not in (None, ""):
            return value
    return None


def from_amplitude(
    raw: object, *, received_at: datetime, budget: budgets.Budget = budgets.DEFAULT
) -> NormalizedEvent:
    """Normalize one element of an Amplitude ``{"events": [...]}`` body."""
    if not isinstance(raw, dict):
        raise BadRequestError(f"expected a JSON object, got {type(raw).__name__}")
    event = normalize.sanitize_json(raw, budget)
    name = event.get("event_type")
    if not isinstance(name, str) or not name.strip():
        raise BadRequestError("field 'event_type' is required and must be a non-empty string")
    props = _props(event.get("event_properties"))
    user_props = _props(event.get("user_properties"))
    device_id = event.get("device_id") if event.get("device_id") not in ("", None) else None
    user_id = event.get("user_id") if event.get("user_id") not in ("", None) else None
    kind = props.get("$event_type")
    kind = _EVENT_TYPES.get(kind, kind) if isinstance(kind, str) else kind
    url = _first(props, "$current_url", "[Amplitude] Page URL", "Page URL", "Page Location")
    text = _first(props, "$button_text", "[Amplitude] Element Text", "Element Text")
    return normalize.from_parts(
        source=SOURCE,
        payload=event,
        raw_uuid=event.get("uuid") or event.get("insert_id") or event.get("$insert_id"),
        event=name,
        event_type=kind,
        timestamp=event.get("time") or event.get("event_time"),
        received_at=received_at,
        session_id=_session(event.get("session_id"), device_id),
        distinct_id=user_id if user_id is not None else device_id,
        email=user_props.get("email") or event.get("email"),
        current_url=url,
        referrer=_first(props, "[Amplitude] Page Referrer", "referrer", "$referrer"),
        target=target_from_parts(
            _str_or_none(_first(props, "$element_tag", "[Amplitude] Element Tag")),
            _str_or_none(_first(props, "$element_id", "[Amplitude] Element ID")),
            _str_or_none(text),
            _str_or_none(_first(props, "[Amplitude] Element Href", "Element Href")),
        ),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
