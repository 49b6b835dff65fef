"""The headers of one push request, as pure functions over the exact bytes sent.

Two signature schemes ride on every request:

* ``X-Connector-Signature: sha256=<hex HMAC-SHA256(secret, body)>``, which the stock
  ``autoplay_sdk.WebhookReceiver`` (0.7.2 and 0.13.0) checks, keyed with the secret's UTF-8
  bytes. It carries one signature only (the receiver compares the whole header), so it is made
  with the newest secret. It has no timestamp: a captured request verifies forever.
* Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``): HMAC-SHA256
  over ``<id>.<timestamp>.<body>``, base64, as ``v1,<sig>``; space-separated, one per live
  secret, so receivers keep verifying while a rotated secret is in its grace period. A
  verifier rejects timestamps outside its tolerance (5 minutes in the reference libraries),
  which is what makes a replayed request useless. The key is the secret's UTF-8 bytes, except
  for a ``whsec_<base64>`` secret, whose decoded bytes are the key (the Standard Webhooks
  convention, so their libraries take such a secret as it is).

``Authorization: Bearer <newest secret>`` is added as the hosted connector does (optional).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

WHSEC_PREFIX = "whsec_"
USER_AGENT = "autoplay-receiver-push/1"


def connector_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` exactly as ``WebhookReceiver.verify`` recomputes it."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature for ``secret``."""
    if secret.startswith(WHSEC_PREFIX):
        encoded = secret[len(WHSEC_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode("utf-8")


def standard_signature(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<b64>`` for each secret, space-separated (newest first)."""
    signed = msg_id.encode("utf-8") + b"." + str(timestamp).encode("ascii") + b"." + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(standard_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    )


def message_id(product_id: str, position: int) -> str:
    """Stable per payload: every retry and redelivery of one event carries the same id, so a
    receiver can deduplicate. Product ids never contain ``:``, so the pair is unambiguous."""
    return f"{product_id}:{position}"


def request_headers(
    body: bytes,
    *,
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int,
    send_bearer: bool,
) -> dict[str, str]:
    """Every header of one attempt. ``secrets``: the live ones, newest first (at least one)."""
    newest = secrets[0]
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "x-connector-signature": connector_signature(newest, body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secrets, msg_id, timestamp, body),
    }
    if send_bearer:
        headers["authorization"] = f"Bearer {newest}"
    return headers
