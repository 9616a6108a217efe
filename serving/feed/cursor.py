"""Opaque, signed page cursors: which cached ranked list, for whom, from where, until when.

A cursor is ``base64url(json) + "." + base64url(HMAC-SHA256)`` under ``signing_secret``. Anyone
can see it is not meant to be read; nobody can change the offset, take another user's list or
extend its life without the signature breaking. :class:`CursorError` means 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from pydantic import SecretStr


class CursorError(ValueError):
    """A cursor that is malformed, forged, expired or someone else's."""


@dataclass(frozen=True)
class Cursor:
    list_id: str
    user_id: int
    offset: int
    expires_s: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: SecretStr, payload: str) -> str:
    digest = hmac.new(secret.get_secret_value().encode(), payload.encode(), hashlib.sha256)
    return _b64(digest.digest()[:16])


def encode(secret: SecretStr, cursor: Cursor) -> str:
    body = {"l": cursor.list_id, "u": cursor.user_id, "o": cursor.offset, "x": cursor.expires_s}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def _int(value: object) -> int:
    """A JSON integer, nothing else: ``1e400`` parses as an infinite float, and ``int()`` of
    it raised ``OverflowError`` (a 500) where a bad cursor must be a 400."""
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


def decode(secret: SecretStr, token: str, user_id: int, now_s: float | None = None) -> Cursor:
    """The cursor in ``token`` if it is intact, unexpired and ``user_id``'s."""
    payload, _, mac = token.partition(".")
    if not payload or not mac or len(token) > 512:
        raise CursorError("malformed cursor")
    if not hmac.compare_digest(mac.encode(), _mac(secret, payload).encode()):
        raise CursorError("cursor signature does not match")
    try:
        body = json.loads(_unb64(payload))
        cursor = Cursor(str(body["l"]), _int(body["u"]), _int(body["o"]), _int(body["x"]))
    except (ValueError, KeyError, TypeError):
        raise CursorError("malformed cursor") from None
    if cursor.user_id != user_id:
        raise CursorError("cursor belongs to another user")
    if cursor.expires_s < (now_s if now_s is not None else time.time()):
        raise CursorError("cursor expired")
    if cursor.offset < 0:
        raise CursorError("malformed cursor")
    return cursor
