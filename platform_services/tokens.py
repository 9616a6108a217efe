"""Rotating refresh tokens: one family per login, one use per token, reuse revokes the family.

A refresh token is 256 random bits handed to the client once; the database keeps only its
SHA-256 (a high-entropy secret needs no slow hash: nobody can guess a preimage). Refreshing
marks the presented token used with a conditional ``UPDATE ... WHERE used_at IS NULL``, so of
two concurrent refreshes with one token exactly one wins; the other, like any later replay,
is treated as theft and revokes every token of the family.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import Settings
from platform_services.auth import issue_token
from platform_services.storage.models import User
from platform_services.storage.social_models import RefreshToken


class RefreshError(Exception):
    """An unknown, expired or revoked refresh token."""


class RefreshReuse(RefreshError):
    """A used token came back: its family is now revoked. The caller must commit the session
    (the revocation has to persist although the request fails)."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _pair(session: Session, settings: Settings, user: User, family: str) -> TokenPair:
    raw = secrets.token_urlsafe(32)
    session.add(RefreshToken(
        user_id=user.id, family=family, token_hash=_digest(raw),
        expires_at=utcnow() + timedelta(seconds=settings.refresh_ttl_s),
    ))  # fmt: skip
    return TokenPair(
        access_token=issue_token(settings, user.id, role=user.role.value),
        refresh_token=raw,
        expires_in=settings.jwt_ttl_s,
        refresh_expires_in=settings.refresh_ttl_s,
    )


def login_tokens(session: Session, settings: Settings, user: User) -> TokenPair:
    """Tokens for a fresh login: a new family (in the caller's transaction)."""
    return _pair(session, settings, user, uuid.uuid4().hex)


def _find(session: Session, raw: str) -> RefreshToken | None:
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == _digest(raw)))


def revoke_family(session: Session, family: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def rotate(session: Session, settings: Settings, raw: str) -> TokenPair:
    """Trade a refresh token for a new pair; :class:`RefreshReuse` if it was used already."""
    row = _find(session, raw)
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise RefreshError("invalid refresh token")
    claimed = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
               RefreshToken.revoked_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if claimed != 1:
        revoke_family(session, row.family)
        raise RefreshReuse("refresh token reused; every session of this login is revoked")
    user = session.get(User, row.user_id)
    if user is None or user.deleted_at is not None:  # deleted meanwhile
        raise RefreshError("invalid refresh token")
    return _pair(session, settings, user, row.family)


def logout(session: Session, raw: str, user_id: int) -> bool:
    """Revoke the login ``raw`` belongs to, if it is ``user_id``'s; ``False`` if unknown."""
    row = _find(session, raw)
    if row is None or row.user_id != user_id:
        return False
    revoke_family(session, row.family)
    return True


def logout_everywhere(session: Session, user_id: int) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
