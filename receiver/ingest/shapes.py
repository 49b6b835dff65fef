"""Which events a destination's request body holds (pure: no I/O, no clock).

``POST /webhook/{product_id}`` and ``POST /ingest/{product_id}`` take:

* one event as a PostHog Hog destination posts it (the tutorial's flat body, or PostHog's stock
  template ``{"event": {...}, "person": {...}}``);
* a PostHog batch ``{"batch": [event, ...]}``, as the hosted connector's own load test sends it:
  each element is its own event, a capture-style object (``properties`` holding
  ``$current_url``, ``$session_id``, …) or a flat Hog body;
* on ``/ingest`` only, an Amplitude Event Streaming body ``{"events": [...]}``
  (:mod:`receiver.ingest.amplitude`).

A request is one transaction: one element that cannot be an event refuses the whole request
with a 400 that names it (``batch[3]: ...``), and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from receiver.errors import BadRequestError, ClientError
from receiver.ingest import budget as budgets
from receiver.ingest import normalize
from receiver.ingest.amplitude import from_amplitude
from receiver.ingest.normalize import NormalizedEvent


def _posthog_element(
    raw: object, *, received_at: datetime, budget: budgets.Budget
) -> NormalizedEvent:
    if isinstance(raw, dict) and isinstance(raw.get("properties"), dict):
        return normalize.from_capture(raw, received_at=received_at, source="webhook", budget=budget)
    return normalize.from_webhook(raw, received_at=received_at, budget=budget)


def _list_of(body: dict[str, Any], key: str) -> list[Any] | None:
    """``body[key]`` when the body is a wrapper around a list of events under that key."""
    if key not in body or isinstance(body.get("event"), str | dict):
        return None  # a single event that merely has such a property
    items = body[key]
    if not isinstance(items, list):
        raise BadRequestError(f"'{key}' must be an array of events, got {type(items).__name__}")
    return items


def events_of(
    body: object,
    *,
    received_at: datetime,
    amplitude: bool,
    budget: budgets.Budget = budgets.DEFAULT,
) -> list[NormalizedEvent]:
    """Every event of a request body, in order; raises the 400 of the first bad element, or
    the 413 of a request over its budget (events per request, values per event)."""
    if isinstance(body, dict):
        batch = _list_of(body, "batch")
        if batch is not None:
            return _each(batch, "batch", _posthog_element, received_at, budget)
        if amplitude:
            events = _list_of(body, "events")
            if events is not None:
                return _each(events, "events", from_amplitude, received_at, budget)
    return [normalize.from_webhook(body, received_at=received_at, budget=budget)]


def _each(
    items: list[Any],
    key: str,
    one: Callable[..., NormalizedEvent],
    received_at: datetime,
    budget: budgets.Budget,
) -> list[NormalizedEvent]:
    if not items:
        raise BadRequestError(f"'{key}' holds no events")
    budgets.check_events(len(items), budget)
    out = []
    for i, raw in enumerate(items):
        try:
            out.append(one(raw, received_at=received_at, budget=budget))
        except ClientError as exc:
            raise type(exc)(f"{key}[{i}]: {exc.detail}") from None
    return out
