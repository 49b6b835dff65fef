"""Errors the receiver raises, and how each reaches a client.

    ReceiverError                      base; never shown to clients as-is
    ├── ClientError                    a 4xx with a stable ``code`` and a human ``detail``
    │   ├── BadRequestError            400  malformed body or field
    │   ├── UnauthorizedError          401  missing or wrong secret / stream key
    │   ├── ForbiddenError             403  admin endpoint from a non-admin caller
    │   ├── NotFoundError              404  unknown product
    │   ├── RequestTimeoutError        408  body not received in time (PostHog retries it)
    │   ├── ConflictError              409  product already registered
    │   ├── PayloadTooLargeError       413  body or decompressed body over the limit
    │   ├── UnsupportedMediaTypeError  415  content type we cannot read
    │   └── RateLimitedError           429  with Retry-After, which PostHog retries
    └── UnavailableError               503  our fault (database down, shutting down); retryable

PostHog retries only 408/429/5xx and silently drops every other 4xx, so a fault of ours must
never surface as a 4xx: anything unexpected becomes a 503 with Retry-After, never a 400.
"""

from __future__ import annotations


class ReceiverError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class ClientError(ReceiverError):
    status_code = 400
    code = "bad_request"


class BadRequestError(ClientError):
    status_code = 400
    code = "bad_request"


class UnauthorizedError(ClientError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(ClientError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ClientError):
    status_code = 404
    code = "not_found"


class RequestTimeoutError(ClientError):
    status_code = 408
    code = "request_timeout"


class ConflictError(ClientError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ClientError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ClientError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimitedError(ClientError):
    status_code = 429
    code = "rate_limited"


class UnavailableError(ReceiverError):
    status_code = 503
    code = "unavailable"
