"""When to retry a push, when to give up, and how long to wait: pure functions.

* 2xx: delivered.
* 408, 429, 5xx and network errors (connect, TLS, timeout, reset): retried, with exponential
  backoff and jitter, never sooner than the answer's ``Retry-After`` (capped at an hour).
* Anything else (3xx, which is not followed, and other 4xx): rejected; the payload goes to the
  dead letters at once, since sending the same bytes again would get the same answer.
* A payload that keeps failing is dead-lettered after ``max_attempts`` attempts, or when its
  next attempt would come more than ``max_age`` seconds after its first, whichever is first.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 3600.0
RETRIED_STATUSES = frozenset({408, 429})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


def verdict(status: int | None) -> Verdict:
    """``status`` None means no HTTP answer at all (a network error or a timeout)."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in RETRIED_STATUSES or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.REJECTED


def backoff_seconds(failures: int, *, base: float, cap: float, rand: float) -> float:
    """The wait after ``failures`` failed attempts: base·2^(failures−1), at most ``cap``, then
    "equal jitter" (between half and all of it; ``rand`` in [0, 1)) so that the payloads of
    many endpoints failing together do not come back in one wave."""
    delay = min(cap, base * 2.0 ** (min(max(failures, 1), 64) - 1))
    return delay * (0.5 + 0.5 * rand)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (Unix time): delta-seconds or an HTTP date.

    Unparseable values are ignored (None); the result is clamped to [0, 1 h] so a receiver
    cannot park an endpoint for days with one header.
    """
    if not value:
        return None
    value = value.strip()
    if len(value) > 64:
        return None
    seconds: float
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclass(frozen=True, slots=True)
class Limits:
    max_attempts: int
    max_age_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float


def next_attempt(
    limits: Limits,
    *,
    failures: int,
    first_attempt_at: float,
    now: float,
    retry_after: float | None,
    rand: float,
) -> tuple[float | None, str | None]:
    """After a retryable failure: ``(when to try again, None)``, or ``(None, reason)`` to give
    up (``"attempts"`` or ``"age"``). ``failures`` counts the one that just happened."""
    if failures >= limits.max_attempts:
        return None, "attempts"
    delay = backoff_seconds(
        failures, base=limits.backoff_base_seconds, cap=limits.backoff_max_seconds, rand=rand
    )
    if retry_after is not None:
        delay = max(delay, retry_after)
    at = now + delay
    if at - first_attempt_at > limits.max_age_seconds:
        return None, "age"
    return at, None
