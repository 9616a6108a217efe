"""Signed, opaque tokens for keyset cursors (following feed, search, notifications).

A token is ``base64url(json) + "." + base64url(HMAC-SHA256)[:16 bytes]`` under the signing
secret, bound to a ``kind`` and a user: a client can pass it back but not change its position,
reuse it for another list or another user. :class:`TokenError` means 400 at the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pydantic import SecretStr

MAX_TOKEN_LEN = 512


class TokenError(ValueError):
    """Malformed, forged, or someone else's / another list's token."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: SecretStr, kind: str, payload: str) -> str:
    key = secret.get_secret_value().encode()
    return _b64(hmac.new(key, f"{kind}\0{payload}".encode(), hashlib.sha256).digest()[:16])


def sign(secret: SecretStr, kind: str, user_id: int, body: dict[str, Any]) -> str:
    payload = _b64(json.dumps({"u": user_id, **body}, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, kind, payload)}"


def unsign(secret: SecretStr, kind: str, user_id: int, token: str) -> dict[str, Any]:
    """The body of ``token`` if it is intact, of ``kind`` and ``user_id``'s."""
    payload, _, mac = token.partition(".")
    if not payload or not mac or len(token) > MAX_TOKEN_LEN or not token.isascii():
        raise TokenError("malformed cursor")
    if not hmac.compare_digest(mac.encode(), _mac(secret, kind, payload).encode()):
        raise TokenError("cursor signature does not match")
    try:
        body = json.loads(_unb64(payload))
    except ValueError:
        raise TokenError("malformed cursor") from None
    if not isinstance(body, dict) or body.get("u") != user_id:
        raise TokenError("cursor belongs to another user")
    return body
