"""HMAC signatures between fenliu and the hotline platform / SMS gateway, both ways, in the
Standard Webhooks 1.0 convention: headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds)
and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; the receiver
refuses a timestamp more than five minutes away and compares in constant time. The shared
secret is read from the environment variable a platform's ``secret_env`` names (a ``whsec_``
prefix is allowed and means base64 key bytes, as in the standard)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping

TOLERANCE = 300.0


class SignatureError(Exception):
    """Why a webhook's signature was refused (said to the sender, without secrets)."""


def secret_from_env(name: str) -> bytes | None:
    value = os.environ.get(name, "") if name else ""
    if not value:
        return None
    if value.startswith("whsec_"):
        try:
            return base64.b64decode(value[len("whsec_"):], validate=True)
        except ValueError:
            return value.encode()
    return value.encode()


def signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body)}


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The delivery id when the signature holds; SignatureError saying what was wrong otherwise."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and stamp and given):
        raise SignatureError("缺少签名 / missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not Unix seconds") from None
    if abs(now - ts) > TOLERANCE:
        raise SignatureError(f"时间戳超出 {int(TOLERANCE)} 秒 / webhook-timestamp {ts} is more than "
                             f"{int(TOLERANCE)} s from our clock (replay, or the clocks disagree)")
    expected = signature(secret, msg_id, ts, body)
    for candidate in given.split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return msg_id
    raise SignatureError("签名不符 / signature does not match (wrong secret, or the body was changed)")
