"""Accounts and tokens: argon2 password hashes, HS256 access JWTs, registration and login.

Passwords are hashed with argon2id (``argon2-cffi``) at OWASP's recommended minimum cost
(19 MiB, 2 passes, 1 lane: ~50 ms here; the library default, 64 MiB x 4 lanes, took 300+ ms a
login on this 2-core machine and would make login the API's most expensive call). Login
does the same work whether or not the account exists (a dummy hash is verified for an unknown
name), so neither the answer nor its timing tells who has an account. Access tokens carry
``sub`` (the user id, a canonical decimal string) and ``role``; refresh tokens are in
:mod:`platform_services.tokens`.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings
from platform_services.storage.models import Role, User

MAX_ID = 2**63 - 1  # a signed 64-bit id: what every table and the bus consumers can hold
# ASCII digits only (no sign, space, "_" or leading zero); 0 is an id: a loaded data set
# keeps its own user ids, which start at 0 (KuaiRand, the synthetic world).
_CANONICAL_ID = re.compile(r"0|[1-9][0-9]{0,18}")
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified for unknown usernames, so that a miss costs what a wrong password costs.
_DUMMY_HASH = _hasher.hash("not-a-password-of-anyone")


class AuthError(Exception):
    """A missing, malformed, expired or forged token."""


class ConflictError(Exception):
    """The username or email is taken."""


@dataclass(frozen=True)
class Claims:
    """What a valid access token says."""

    user_id: int
    role: Role


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """``True`` if ``password`` matches; ``False`` for anything else, unusable hashes too."""
    try:
        return _hasher.verify(stored, password)
    except VerificationError:
        return False
    except InvalidHashError:  # an account without a password: same work as a wrong one
        _verify_dummy(password)
        return False


def _verify_dummy(password: str) -> None:
    with contextlib.suppress(VerificationError):
        _hasher.verify(_DUMMY_HASH, password)


def parse_user_id(value: object) -> int:
    """A user id from a token or cursor: canonical ASCII decimal in 0..2^63-1, else ValueError."""
    if not isinstance(value, str) or not _CANONICAL_ID.fullmatch(value):
        raise ValueError("sub is not a canonical user id")
    user_id = int(value)
    if user_id > MAX_ID:
        raise ValueError("sub is out of range")
    return user_id


def issue_token(
    settings: Settings, user_id: int, ttl_s: int | None = None, role: str = Role.USER.value
) -> str:
    """An access token for ``user_id`` (``settings.jwt_ttl_s``, 15 minutes, unless given)."""
    now = int(time.time())
    claims = {
        "sub": str(user_id), "role": str(role), "iat": now,
        "exp": now + (ttl_s or settings.jwt_ttl_s),
    }
    assert settings.jwt_secret is not None
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), settings.jwt_algorithm)


def decode_token(settings: Settings, token: str) -> Claims:
    """The token's claims; :class:`AuthError` for anything not a valid, unexpired token.

    A token without ``role`` (issued before roles existed) is a plain user's."""
    assert settings.jwt_secret is not None
    try:
        claims, expires = _verified(token, settings.jwt_secret.get_secret_value(),
                                    settings.jwt_algorithm)
    except (jwt.PyJWTError, ValueError) as exc:
        raise AuthError(str(exc) or type(exc).__name__) from None
    if expires <= time.time():  # as PyJWT's own check: expired from ``exp`` on
        raise AuthError("Signature has expired")
    return claims


@lru_cache(maxsize=8192)
def _verified(token: str, secret: str, algorithm: str) -> tuple[Claims, int]:
    """The claims of a token whose signature and claims passed, with its expiry. A client
    sends the same token with every request for its life, and a decode costs ~0.25 ms of
    CPU, about a third of a bare FastAPI request: so each token is decoded once. Only
    tokens that pass are kept (an exception is never cached), and once a token has passed,
    only its expiry can change that (``iat`` and ``nbf`` lie in the past for good), which
    :func:`decode_token` checks on every use. The secret is part of the key."""
    claims = jwt.decode(token, secret, algorithms=[algorithm],
                        options={"require": ["sub", "exp"]})
    role = Role(claims.get("role", Role.USER.value))
    return Claims(parse_user_id(claims["sub"]), role), int(claims["exp"])


def user_id_from_token(settings: Settings, token: str) -> int:
    """The token's user id; :class:`AuthError` for anything not a valid, unexpired token."""
    return decode_token(settings, token).user_id


def find_user(session: Session, username: str) -> User | None:
    """The account named ``username``, compared case-insensitively."""
    return session.scalar(select(User).where(func.lower(User.username) == username.lower(),
                                             User.deleted_at.is_(None)))


def register_user(
    session: Session, username: str, email: str, password: str, region: str | None = None
) -> User:
    """Create an account in the caller's transaction; :class:`ConflictError` if taken
    (usernames and emails compare case-insensitively)."""
    taken = session.scalar(
        select(User.id).where(
            or_(func.lower(User.username) == username.lower(),
                func.lower(User.email) == email.lower())
        )
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
    """The user if the password is right, else ``None`` after the same hashing work."""
    user = find_user(session, username)
    if user is None:
        _verify_dummy(password)
        return None
    if not verify_password(password, user.password_hash):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)  # the caller's commit keeps it
    return user
