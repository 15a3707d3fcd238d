"""Standard Webhooks signing: the headers of one attempt, signed by every active secret."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SIGNATURE_HEADER = "webhook-signature"
USER_AGENT = "Scoreline-Webhooks/1.0"


def new_webhook_id() -> str:
    """A message id for `webhook-id`: unique, and the same on every attempt of one event."""
    return "msg_" + secrets.token_hex(12)


def signature(body: bytes, *, webhook_id: str, timestamp: int, keys: Sequence[str]) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret, space-separated.

    The signing itself is the `standardwebhooks` library's, so receivers using it agree with us
    byte for byte.
    """
    moment = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode("utf-8")
    return " ".join(Webhook(secret).sign(webhook_id, moment, text) for secret in keys)


def headers(body: bytes, *, webhook_id: str, timestamp: int, keys: Sequence[str]) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        SIGNATURE_HEADER: signature(body, webhook_id=webhook_id, timestamp=timestamp, keys=keys),
    }


def redacted(sent: dict[str, str]) -> dict[str, str]:
    """The headers as logged: each signature replaced, so the log never holds a usable one."""
    out = dict(sent)
    if SIGNATURE_HEADER in out:
        count = len(out[SIGNATURE_HEADER].split())
        out[SIGNATURE_HEADER] = " ".join(["v1,[redacted]"] * count)
    return out
