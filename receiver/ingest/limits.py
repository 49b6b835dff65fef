"""Abuse controls: failed-authentication lockout, a per-product ingest rate limit, and
per-client token buckets for public endpoints (``POST /sessions/link``).

Both answer 429 with Retry-After, which PostHog and posthog-js retry; neither ever answers a
4xx that a sender would drop. Defaults never trip for legitimate use (a mistyped secret a few
times, a product sending thousands of events per second); tests set tight limits explicitly.
All state is in memory and per process: a limit protects this process's CPU and database
connections, which is what it is for.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

from receiver.errors import RateLimitedError

MAX_TRACKED = 50_000


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class _Bucket:
    tokens: float
    at: float


class Limits:
    def __init__(
        self,
        *,
        auth_fail_limit: int,
        auth_fail_window: float,
        ingest_rate: float,
        ingest_burst: int,
        clock: callable[[], float] = time.monotonic,  # type: ignore[valid-type]
    ) -> None:
        self.auth_fail_limit = auth_fail_limit
        self.auth_fail_window = auth_fail_window
        self.ingest_rate = ingest_rate
        self.ingest_burst = ingest_burst
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._client_buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    # ------------------------------------------------------------------ failed auth

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        stamps = self._failures.get(key)
        if not stamps:
            return []
        cutoff = now - self.auth_fail_window
        while stamps and stamps[0] < cutoff:
            stamps.pop(0)
        if not stamps:
            self._failures.pop(key, None)
        return stamps

    def check_auth_block(self, request: Request, product_id: str) -> None:
        """Refuse, before any hashing, a client that keeps failing authentication."""
        if not self.auth_fail_limit:
            return
        now = self.clock()
        stamps = self._recent((client_key(request), product_id), now)
        if len(stamps) >= self.auth_fail_limit:
            retry = max(1, math.ceil(stamps[0] + self.auth_fail_window - now))
            raise RateLimitedError(
                "too many failed authentication attempts; retry later", retry_after=retry
            )

    def auth_failed(self, request: Request, product_id: str) -> None:
        if not self.auth_fail_limit:
            return
        key = (client_key(request), product_id)
        self._failures.setdefault(key, []).append(self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    # ------------------------------------------------------------------ per-client rate

    def check_client_rate(
        self, request: Request, scope: str, *, rate: float, burst: int
    ) -> None:
        """A token bucket per (client address, ``scope``): 429 with Retry-After when empty."""
        now = self.clock()
        key = (client_key(request), scope)
        bucket = self._client_buckets.get(key)
        if bucket is None:
            bucket = self._client_buckets[key] = _Bucket(float(burst), now)
            while len(self._client_buckets) > MAX_TRACKED:
                self._client_buckets.popitem(last=False)
        else:
            self._client_buckets.move_to_end(key)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        retry = max(1, math.ceil((1 - bucket.tokens) / rate))
        raise RateLimitedError("too many requests from this address; retry later", retry_after=retry)

    # ------------------------------------------------------------------ ingest rate

    def check_ingest(self, product_id: str, n: int) -> None:
        if not self.ingest_rate:
            return
        now = self.clock()
        bucket = self._buckets.get(product_id)
        if bucket is None:
            bucket = self._buckets[product_id] = _Bucket(float(self.ingest_burst), now)
        bucket.tokens = min(
            float(self.ingest_burst), bucket.tokens + (now - bucket.at) * self.ingest_rate
        )
        bucket.at = now
        if bucket.tokens >= n:
            bucket.tokens -= n
            return
        retry = max(1, math.ceil((n - bucket.tokens) / self.ingest_rate))
        raise RateLimitedError(
            f"ingest rate limit of {self.ingest_rate:g} events/s exceeded for this product",
            retry_after=retry,
        )
