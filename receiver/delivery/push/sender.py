"""One push request: POST the bytes, within a deadline, and say what came back.

Bounded on every side: at most ``max_connections`` requests in flight per process, a deadline
on the whole request (connect, send, answer), redirects never followed, no proxy or netrc
settings from the environment (a destination gets exactly what the configuration says), and
at most :data:`DRAIN_BYTES` of an answer read (:data:`ERROR_BODY_BYTES` kept for the error).
Errors are described without the URL, which may carry credentials.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from receiver.delivery.push.destination import redact_url

ERROR_BODY_BYTES = 512
DRAIN_BYTES = 64 * 1024
ERROR_TEXT_CHARS = 300


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (network error, timeout)
    retry_after: str | None
    error: str | None  # for anything but a 2xx
    seconds: float


class Sender:
    def __init__(self, *, timeout: float, max_connections: int) -> None:
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.perf_counter()
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._post(url, body, headers, started)
            except TimeoutError:
                return Answer(None, None, f"no answer within {self.timeout:g} s", _since(started))
            except httpx.HTTPError as exc:
                return Answer(None, None, _describe(exc, url), _since(started))
            except OSError as exc:  # raised below httpx on some platforms
                return Answer(None, None, _describe(exc, url), _since(started))

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], started: float
    ) -> Answer:
        async with self._client.stream("POST", url, content=body, headers=headers) as resp:
            status = resp.status_code
            # Read the answer (bounded): a response closed unread takes its connection with
            # it, and every push would then open a new one.
            head = await _drain(resp)
            if 200 <= status < 300:
                return Answer(status, None, None, _since(started))
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed: point the endpoint at the final URL)"
            else:
                text = " ".join(head[:ERROR_BODY_BYTES].decode("utf-8", "replace").split())
                if text:
                    error += ": " + text[:ERROR_TEXT_CHARS]
            return Answer(status, resp.headers.get("retry-after"), error, _since(started))


async def _drain(resp: httpx.Response) -> bytes:
    """The answer's first bytes; reads it to the end if it is small (so the connection is kept),
    stops after :data:`DRAIN_BYTES` otherwise (the connection is then closed)."""
    head = b""
    seen = 0
    async for part in resp.aiter_raw():
        if len(head) < ERROR_BODY_BYTES:
            head += part[: ERROR_BODY_BYTES - len(head)]
        seen += len(part)
        if seen > DRAIN_BYTES:
            break
    return head


def _describe(exc: BaseException, url: str) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # httpx does not put the URL in these messages today; make sure a future one cannot leak
    # the credentials of a URL into the database or the logs.
    text = text.replace(url, redact_url(url))
    return text[:ERROR_TEXT_CHARS]


def _since(started: float) -> float:
    return time.perf_counter() - started
