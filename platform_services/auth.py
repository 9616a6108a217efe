"""Accounts and tokens: scrypt password hashes, HS256 JWTs, registration and login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import jwt
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings
from platform_services.storage.models import User

_N, _R, _P = 2**14, 8, 1
DEFAULT_ROLE, ADMIN = "user", "admin"


class AuthError(Exception):
    """A missing, malformed, expired or forged token."""


class ConflictError(Exception):
    """The username or email is taken."""


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def role_of(settings: Settings, user: User) -> str:
    """The role a login gets: ``admin`` for ``settings.admin_usernames``, else ``user``."""
    return ADMIN if user.username in settings.admin_usernames else DEFAULT_ROLE


def issue_token(settings: Settings, user_id: int, ttl_s: int | None = None,
                role: str = DEFAULT_ROLE) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + (ttl_s or settings.jwt_ttl_s),
              "role": role}
    assert settings.jwt_secret is not None
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), settings.jwt_algorithm)


def user_id_from_token(settings: Settings, token: str) -> int:
    """The token's user id; :class:`AuthError` for anything not a valid, unexpired token."""
    return claims_from_token(settings, token)[0]


def claims_from_token(settings: Settings, token: str) -> tuple[int, str]:
    """(user id, role) of a valid, unexpired token (a token without a role is a ``user``'s);
    :class:`AuthError` otherwise."""
    assert settings.jwt_secret is not None
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            options={"require": ["sub", "exp"]},
        )
        role = claims.get("role", DEFAULT_ROLE)
        if not isinstance(role, str):
            raise ValueError("role claim is not a string")
        return int(claims["sub"]), role
    except (jwt.PyJWTError, ValueError) as exc:
        raise AuthError(str(exc) or type(exc).__name__) from None


def register_user(
    session: Session, username: str, email: str, password: str, region: str | None = None
) -> User:
    """Create an account in the caller's transaction; :class:`ConflictError` if taken."""
    taken = session.scalar(
        select(User.id).where(or_(User.username == username, User.email == email))
    )
    if taken is not None:
        raise ConflictError("username or email is already registered")
    user = User(
        username=username, email=email, password_hash=hash_password(password), region=region
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # lost a race with a concurrent registration
        raise ConflictError("username or email is already registered") from None
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not verify_password(password, user.password_hash):
        return None
    return user
