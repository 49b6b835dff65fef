"""Abuse controls: failed-authentication lockout, per-product ingest rate limits (events and
bytes), per-key read limits, and per-client token buckets for public endpoints
(``POST /sessions/link``).

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
# The failed-auth scope of lookups for products and capture tokens that do not exist: each one
# costs a database round trip, and a scan uses a fresh name every time, so they are counted per
# client across every name (a client is never refused for a product known to exist).
UNKNOWN_SCOPE = "?unknown"


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
        bytes_rate: float = 0.0,
        bytes_burst: int = 64 * 1024 * 1024,
        read_rate: float = 0.0,
        read_burst: int = 100,
        clock: callable[[], float] = time.monotonic,  # type: ignore[valid-type]
    ) -> None:
        self.auth_fail_limit = auth_fail_limit
        self.auth_fail_window = auth_fail_window
        self.ingest_rate = ingest_rate
        self.ingest_burst = ingest_burst
        self.bytes_rate = bytes_rate
        self.bytes_burst = bytes_burst
        self.read_rate = read_rate
        self.read_burst = read_burst
        self.clock = clock
        self._reads: OrderedDict[str, _Bucket] = OrderedDict()
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._byte_buckets: dict[str, _Bucket] = {}
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

    def check_ingest(self, product_id: str, n: int, nbytes: int = 0) -> None:
        """Charge ``n`` events and ``nbytes`` decoded bytes to the product, or refuse (429)."""
        now = self.clock()
        events = self._take(self._buckets, product_id, n, self.ingest_rate, self.ingest_burst, now)
        if events is not None:
            raise RateLimitedError(
                f"ingest rate limit of {self.ingest_rate:g} events/s exceeded for this product",
                retry_after=events,
            )
        size = self._take(
            self._byte_buckets, product_id, nbytes, self.bytes_rate, self.bytes_burst, now
        )
        if size is not None:
            # Give the events back: this request stores nothing.
            if self.ingest_rate:
                self._buckets[product_id].tokens += n
            raise RateLimitedError(
                f"ingest rate limit of {self.bytes_rate:g} bytes/s exceeded for this product",
                retry_after=size,
            )

    @staticmethod
    def _take(
        buckets: dict[str, _Bucket], key: str, n: int, rate: float, burst: int, now: float
    ) -> int | None:
        """Take ``n`` tokens from a token bucket; None, or the seconds to wait when refused."""
        if not rate:
            return None
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= n:
            bucket.tokens -= n
            return None
        return max(1, math.ceil((n - bucket.tokens) / rate))

    # ------------------------------------------------------------------ agents' reads

    def check_read(self, key: str) -> None:
        """One read (live activity, an MCP request) by an authenticated key; 429 past its rate."""
        if not self.read_rate:
            return
        now = self.clock()
        bucket = self._reads.get(key)
        if bucket is None:
            bucket = self._reads[key] = _Bucket(float(self.read_burst), now)
            while len(self._reads) > MAX_TRACKED:
                self._reads.popitem(last=False)
        bucket.tokens = min(float(self.read_burst), bucket.tokens + (now - bucket.at) * self.read_rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        retry = max(1, math.ceil((1 - bucket.tokens) / self.read_rate))
        raise RateLimitedError(
            f"read rate limit of {self.read_rate:g} requests/s exceeded for this key",
            retry_after=retry,
        )
