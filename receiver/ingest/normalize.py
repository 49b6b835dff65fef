"""Raw PostHog payloads → one typed, bounded :class:`NormalizedEvent`.

Pure functions only: no I/O, no clock reads (``received_at`` is passed in), no logging of
payloads. Two inputs are understood:

* the body a Hog destination POSTs to ``/webhook/{product_id}`` — the tutorial's flat payload
  (``event``, ``distinct_id``, ``current_url``, ``elements_chain``, …), ours (which adds
  ``uuid``, ``$el_text``, ``captured_at``), or PostHog's stock webhook template body
  ``{"event": {…event object…}, "person": {…}}``;
* one event of PostHog's native capture API (``event``, ``properties``, ``distinct_id``, …).

The clicked element always comes from element 0 of ``elements_chain``; the tutorial's four
extracted "hint" fields are used only when there is no chain, because its extraction picks
the first match anywhere in the chain (usually an ancestor's id or name).
"""

from __future__ import annotations

import hashlib
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from receiver.errors import BadRequestError
from receiver.ingest import budget as budgets
from receiver.ingest.elements import Target, target_from_chain

MAX_ID_CHARS = 200
MAX_LABEL_CHARS = 200
MAX_TEXT_CHARS = 1024
MAX_URL_CHARS = 8192
MAX_EVENT_NAME_CHARS = 200
MAX_PATH_SEGMENTS = 64
MAX_PAYLOAD_DEPTH = budgets.MAX_DEPTH
FUTURE_CLAMP = timedelta(hours=23)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WS = re.compile(r"\s+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-.~]{16,}")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")

# PostHog events that describe the SDK, not the person; kept in the table, never streamed.
INTERNAL_EVENTS = frozenset(
    {
        "$identify", "$create_alias", "$merge_dangerously", "$set", "$groupidentify",
        "$feature_flag_called", "$opt_in", "$web_vitals", "$exception", "$snapshot",
        "$pageleave", "$autocapture_disabled", "$heatmap", "$dead_clicks_disabled",
        "survey shown", "survey dismissed", "$$heatmap", "$performance_event",
    }
)
STREAMED_TYPES = frozenset({"pageview", "click", "submit", "type", "copy", "custom"})

_KIND_NOUN = {
    "button": "button",
    "link": "link",
    "input": "field",
    "textarea": "text area",
    "select": "dropdown",
    "form": "form",
    "label": "label",
}


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    """One event as stored in the ``events`` table (minus the columns the store assigns)."""

    dedup_key: str
    event_uuid: str | None
    event: str
    action_type: str
    occurred_at: datetime
    session_id: str | None
    distinct_id: str | None
    email: str | None
    current_url: str | None
    canonical_url: str | None
    pathname: str | None
    referrer: str | None
    element_tag: str | None
    element_id: str | None
    element_text: str | None
    input_name: str | None
    link_target: str | None
    title: str
    description: str
    source: str
    payload: dict[str, Any] = field(repr=False)


# --------------------------------------------------------------------------- small helpers


def _str(value: object, limit: int) -> str | None:
    """A bounded, NUL-free string, or None for missing/empty values."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = repr(value) if isinstance(value, float) else str(value)
    elif not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    if not value:
        return None
    return value[:limit]


def _label(value: str | None) -> str | None:
    if not value:
        return None
    value = _WS.sub(" ", _CONTROL.sub(" ", value)).strip()
    return value[:MAX_LABEL_CHARS] or None


def _identifier(value: object, name: str) -> str | None:
    text = _str(value, 10_000)
    if text is None:
        return None
    if _CONTROL.search(text):
        raise BadRequestError(f"{name} contains control characters")
    if len(text) > MAX_ID_CHARS:
        raise BadRequestError(f"{name} is longer than {MAX_ID_CHARS} characters")
    return text


def sanitize_json(value: Any, budget: budgets.Budget = budgets.DEFAULT) -> Any:
    """Make a decoded JSON value storable as JSONB, in place: no NUL characters, and within the
    per-event budget (values, depth, string length; see :mod:`receiver.ingest.budget`)."""
    return budgets.check_event(value, budget)


def parse_timestamp(value: object, *, received_at: datetime) -> datetime | None:
    """ISO 8601 (liberally) or epoch seconds/milliseconds; None when unparseable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        # from_capture's caller passes an already-resolved time (capture's clock-skew rules).
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000.0
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+01:00" lies before datetime.min in UTC
        return None


def _clamp(ts: datetime | None, received_at: datetime) -> datetime:
    if ts is None or ts > received_at + FUTURE_CLAMP or ts.year < 2000:
        return received_at
    return ts


def _is_dynamic_segment(segment: str) -> bool:
    if segment.isdigit():
        return True
    if _UUID.fullmatch(segment):
        return True
    has_digit = _DIGIT.search(segment) is not None
    if has_digit and _HEX.fullmatch(segment):
        return True
    return bool(has_digit and _TOKEN.fullmatch(segment) and _LETTER.search(segment))


def canonical_url(url: str | None) -> str | None:
    """Absolute URL without query or fragment; ids, UUIDs, hex and random tokens → ``:id``."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        netloc = parts.netloc.lower()
        if (scheme == "http" and netloc.endswith(":80")) or (
            scheme == "https" and netloc.endswith(":443")
        ):
            netloc = netloc.rsplit(":", 1)[0]
    except ValueError:
        return None
    # A real path has a handful of segments; each costs a few regex calls, so a hostile
    # "/1a/1a/…" of 8,192 characters (2,730 segments) would cost milliseconds per event: past
    # MAX_PATH_SEGMENTS the path is cut (the canonical URL groups pages, it is not the URL).
    pieces = parts.path.split("/", MAX_PATH_SEGMENTS)
    if len(pieces) > MAX_PATH_SEGMENTS:
        pieces.pop()
    segments = [s for s in pieces if s]
    path = "/" + "/".join(":id" if _is_dynamic_segment(s) else s for s in segments)
    return urlunsplit((scheme, netloc, path, "", ""))[:MAX_URL_CHARS]


def pathname(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return (urlsplit(url).path or "/")[:MAX_URL_CHARS]
    except ValueError:
        return None


def page_name(canonical: str | None) -> str:
    """"Billing" for …/settings/billing; "Projects" for …/projects/:id; "Home" for /."""
    if not canonical:
        return "unknown"
    try:
        path = urlsplit(canonical).path
    except ValueError:
        return "unknown"
    segments = [s for s in path.split("/") if s and s != ":id"]
    if not segments:
        return "Home"
    last = segments[-1]
    last = re.sub(r"\.(html?|php|aspx?)$", "", last)
    words = re.split(r"[-_+.\s]+", last)
    name = " ".join(w.capitalize() for w in words if w)
    return _label(name) or "Home"


# --------------------------------------------------------------------------- classification


def action_type(event: str, event_type: str | None) -> str:
    if event == "$pageview":
        return "pageview"
    if event in ("$autocapture", "$rageclick", "$dead_click"):
        kind = (event_type or "click").lower()
        return {
            "click": "click", "submit": "submit", "change": "type",
            "copy": "copy", "cut": "copy",
        }.get(kind, "click")
    if event == "$copy_autocapture":
        return "copy"
    if event in INTERNAL_EVENTS or event.startswith("$"):
        return "internal"
    return "custom"


def is_streamed(action: str) -> bool:
    return action in STREAMED_TYPES


def describe(
    *, event: str, action: str, target: Target | None, canonical: str | None
) -> tuple[str, str]:
    """Deterministic title and description, phrased as the SDK's documentation does."""
    page = page_name(canonical)
    page_lower = page.lower()
    label = _label(target.text) if target else None
    if target and not label:
        label = _label(target.input_name) or _label(target.element_id)
    noun = _KIND_NOUN.get(target.kind, "") if target else ""
    thing = " ".join(p for p in (label, noun) if p) or "element"

    if action == "pageview":
        return f"Page Load: {page}", f"User landed on the {page} page"
    if action == "click":
        if event == "$rageclick":
            return f"Rage click {thing}", f"User rage-clicked {thing} on the {page_lower} page"
        if event == "$dead_click":
            return (
                f"Dead click {thing}",
                f"User clicked {thing} on the {page_lower} page and nothing happened",
            )
        return f"Click {thing}", f"User clicked {thing} on the {page_lower} page"
    if action == "submit":
        form = label or "a"
        return f"Submit {form} form", f"User submitted {form} form on the {page_lower} page"
    if action == "type":
        what = thing if label else f"a {noun or 'field'}"
        verb = "changed the selection in" if noun == "dropdown" else "typed into"
        return f"Change {thing}", f"User {verb} {what} on the {page_lower} page"
    if action == "copy":
        return "Copy text", f"User copied text on the {page_lower} page"
    name = _label(event) or "event"
    return name, f"User triggered {name} on the {page_lower} page"


def dedup_key(raw_uuid: object, payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """The payload's UUID when it has a valid one, else a hash of the whole payload."""
    text = _str(raw_uuid, 100)
    if text:
        try:
            canonical = str(uuidlib.UUID(text))
            return "u:" + canonical, canonical
        except ValueError:
            return "u:" + text[:100], None
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return "h:" + digest, None


# --------------------------------------------------------------------------- entry points


def _require_object(payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise BadRequestError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _build(
    *,
    source: str,
    payload: dict[str, Any],
    raw_uuid: object,
    event: object,
    event_type: object,
    timestamp: object,
    received_at: datetime,
    session_id: object,
    distinct_id: object,
    email: object,
    current_url: object,
    referrer: object,
    chain: object,
    el_text: object,
    hints: Mapping[str, object],
    target: Target | None = None,
) -> NormalizedEvent:
    name = _str(event, MAX_EVENT_NAME_CHARS)
    if name is None:
        raise BadRequestError("field 'event' is required and must be a non-empty string")
    if _CONTROL.search(name):
        raise BadRequestError("field 'event' contains control characters")
    action = action_type(name, _str(event_type, 50))
    url = _str(current_url, MAX_URL_CHARS)
    canonical = canonical_url(url)

    if action not in ("click", "submit", "type", "copy"):
        target = None
    elif target is None:
        chain_text = chain if isinstance(chain, str) else None
        target = target_from_chain(chain_text, _str(el_text, MAX_TEXT_CHARS))
        if not chain_text:
            # No chain to parse: fall back to the hint fields the tutorial's script computed.
            target = Target(
                tag=target.tag,
                element_id=_str(hints.get("element_id"), MAX_ID_CHARS) or target.element_id,
                text=target.text or _label(_str(hints.get("button_or_link_text"), MAX_TEXT_CHARS)),
                input_name=_str(hints.get("input_field_name"), MAX_ID_CHARS) or target.input_name,
                href=_str(hints.get("link_destination"), MAX_URL_CHARS) or target.href,
                kind=target.kind,
            )

    title, description = describe(event=name, action=action, target=target, canonical=canonical)
    key, event_uuid = dedup_key(raw_uuid, payload)
    occurred = _clamp(parse_timestamp(timestamp, received_at=received_at), received_at)
    return NormalizedEvent(
        dedup_key=key,
        event_uuid=event_uuid,
        event=name,
        action_type=action,
        occurred_at=occurred,
        session_id=_identifier(session_id, "session_id"),
        distinct_id=_identifier(distinct_id, "distinct_id"),
        email=_label(_str(email, 320)),
        current_url=url,
        canonical_url=canonical,
        pathname=pathname(url),
        referrer=_str(referrer, MAX_URL_CHARS),
        element_tag=target.tag if target else None,
        element_id=_str(target.element_id, MAX_ID_CHARS) if target else None,
        element_text=_str(target.text, MAX_TEXT_CHARS) if target else None,
        input_name=_str(target.input_name, MAX_ID_CHARS) if target else None,
        link_target=_str(target.href, MAX_URL_CHARS) if target else None,
        title=title,
        description=description,
        source=source,
        payload=payload,
    )


def from_webhook(
    raw: object, *, received_at: datetime, budget: budgets.Budget = budgets.DEFAULT
) -> NormalizedEvent:
    """Normalize one Hog-destination POST body (flat tutorial payload or stock template)."""
    payload = sanitize_json(_require_object(raw), budget)
    inner = payload.get("event")
    if isinstance(inner, dict):
        # PostHog's stock "HTTP Webhook" template body: {"event": {...}, "person": {...}}.
        person = payload.get("person") if isinstance(payload.get("person"), dict) else {}
        return from_capture(
            inner, received_at=received_at, source="webhook", person=person, payload=payload,
            budget=None,  # walked already, as part of the whole body
        )
    return _build(
        source="webhook",
        payload=payload,
        raw_uuid=payload.get("uuid") or payload.get("event_uuid"),
        event=inner,
        event_type=payload.get("event_type") or payload.get("$event_type"),
        timestamp=payload.get("timestamp") or payload.get("captured_at"),
        received_at=received_at,
        session_id=payload.get("session_id") or payload.get("$session_id"),
        distinct_id=payload.get("distinct_id"),
        email=payload.get("email"),
        current_url=payload.get("current_url") or payload.get("$current_url"),
        referrer=payload.get("referrer") or payload.get("$referrer"),
        chain=payload.get("elements_chain"),
        el_text=payload.get("$el_text") or payload.get("el_text"),
        hints=payload,
    )


def from_parts(
    *,
    source: str,
    payload: dict[str, Any],
    raw_uuid: object,
    event: object,
    event_type: object,
    timestamp: object,
    received_at: datetime,
    session_id: object,
    distinct_id: object,
    email: object,
    current_url: object,
    referrer: object,
    target: Target,
) -> NormalizedEvent:
    """Normalize an event another source already split into fields (see ``amplitude``).

    ``payload`` must be sanitized JSON (:func:`sanitize_json`); it is stored as the raw body and,
    without ``raw_uuid``, hashed into the deduplication key.
    """
    return _build(
        source=source, payload=payload, raw_uuid=raw_uuid, event=event, event_type=event_type,
        timestamp=timestamp, received_at=received_at, session_id=session_id,
        distinct_id=distinct_id, email=email, current_url=current_url, referrer=referrer,
        chain=None, el_text=None, hints={}, target=target,
    )


def from_capture(
    raw: object,
    *,
    received_at: datetime,
    source: str = "capture",
    timestamp: datetime | None = None,
    person: Mapping[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    budget: budgets.Budget | None = budgets.DEFAULT,
) -> NormalizedEvent:
    """Normalize one PostHog event object (capture API, or a destination's ``event`` global).

    ``timestamp`` is the already-resolved event time when the caller applied capture's clock
    skew rules (``offset`` / ``sent_at``); otherwise the event's own ``timestamp`` is used.
    ``budget`` None: the caller has already walked the event with :func:`sanitize_json`.
    """
    event = _require_object(raw)
    if budget is not None:
        event = sanitize_json(event, budget)
    props = event.get("properties")
    props = props if isinstance(props, dict) else {}
    person_props = (person or {}).get("properties")
    person_props = person_props if isinstance(person_props, dict) else {}
    distinct = event.get("distinct_id") or event.get("$distinct_id") or props.get("distinct_id")
    chain = event.get("elements_chain") or props.get("$elements_chain")
    if not chain and isinstance(event.get("elements"), list):
        chain = None
    return _build(
        source=source,
        payload=payload if payload is not None else event,
        raw_uuid=event.get("uuid"),
        event=event.get("event"),
        event_type=props.get("$event_type"),
        timestamp=timestamp or event.get("timestamp"),
        received_at=received_at,
        session_id=props.get("$session_id"),
        distinct_id=distinct,
        email=props.get("email") or person_props.get("email"),
        current_url=props.get("$current_url"),
        referrer=props.get("$referrer"),
        chain=chain,
        el_text=props.get("$el_text"),
        hints={},
    )
