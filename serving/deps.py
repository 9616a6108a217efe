"""Request dependencies: ``SettingsDep``, ``SessionDep``, ``CurrentUser``, ``ModeratorUser``,
``AdminUser``, the bounded id parameters every route takes (ids are signed 64-bit), the base of
every JSON body (:class:`RequestBody`), and :func:`as_user`, the one-transaction path of the hot
write routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.config import Settings
from platform_services import social
from platform_services.auth import MAX_ID, AuthError, Claims, decode_token
from platform_services.runtime import Runtime
from platform_services.storage.models import Role, User


# ``async``: FastAPI would run a plain function on the thread pool, a hop per dependency.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def get_session(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    """One session per request: a route commits its writes; anything uncommitted rolls back."""
    with runtime.sessions() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def request_claims(request: Request, token: str) -> Claims | AuthError:
    """``token``'s claims, or why it is not valid, once per request: the rate limiter and the
    route's authentication both need them, and a token that fails is decoded afresh each
    time it is asked about (:func:`~platform_services.auth.decode_token` keeps only tokens
    that passed)."""
    cached = getattr(request.state, "claims", None)
    if cached is not None and cached[0] == token:
        return cached[1]
    try:
        claims: Claims | AuthError = decode_token(request.app.state.runtime.settings, token)
    except AuthError as exc:
        claims = exc
    request.state.claims = (token, claims)
    return claims


async def get_claims(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    """The access token's claims (signature, expiry and a strict ``sub`` checked)."""
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers=_UNAUTHORIZED)
    claims = request_claims(request, credentials.credentials)
    if isinstance(claims, AuthError):
        raise HTTPException(401, f"invalid token: {claims}", headers=_UNAUTHORIZED)
    return claims


ClaimsDep = Annotated[Claims, Depends(get_claims)]


def load_user(session: Session, claims: Claims) -> User:
    """The token's user, loaded: a deleted account's tokens stop working at once (401)."""
    user = session.get(User, claims.user_id)
    if user is None or user.deleted_at is not None:
        raise HTTPException(401, "invalid token: unknown user", headers=_UNAUTHORIZED)
    return user


_LIVE_USER = select(User.id).where(User.id == bindparam("user_id"), User.deleted_at.is_(None))


def live_user_id(session: Session, claims: Claims) -> int:
    """The token's user id if the account exists and is not deleted (401 otherwise): what
    :func:`load_user` checks, without loading the whole row."""
    if session.connection().scalar(_LIVE_USER, {"user_id": claims.user_id}) is None:
        raise HTTPException(401, "invalid token: unknown user", headers=_UNAUTHORIZED)
    return claims.user_id


def get_current_user(session: SessionDep, claims: ClaimsDep) -> User:
    """The token's user (:func:`load_user`) for routes that take a session of their own."""
    user = load_user(session, claims)
    session.commit()  # end the read: the connection goes back to the pool (``user`` stays
    # loaded), so a request waiting on something else holds none
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
T = TypeVar("T")


async def as_user(runtime: Runtime, claims: Claims, work: Callable[[Session, int], T],
                  one_write: bool = False) -> T:
    """Check the token's user (:func:`live_user_id`), run ``work(session, user_id)`` and
    commit, all in one transaction on one pooled connection and one worker-thread hop.
    ``one_write``: the work writes in at most one statement on PostgreSQL (after its reads),
    which is atomic on its own: there it runs in autocommit, without the transaction's
    BEGIN and COMMIT round trips (READ COMMITTED gave its reads no more than that anyway).

    The hot writes (like, follow, save, block and their undos) go through here instead of
    ``SessionDep`` + ``CurrentUser``: those cost four thread hops, two connection checkouts
    and a commit of their own per request, which was most of a like's
    time in ``reelrank bench social``."""

    def unit() -> T:
        with runtime.sessions() as session:
            if one_write and session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            out = work(session, live_user_id(session, claims))
            session.commit()
            return out

    def once_more_on_a_dropped_connection() -> T:
        try:
            return unit()
        except DBAPIError as exc:
            # A pooled connection the database dropped (a restart: there is no pre-ping, see
            # make_engine): the pool is renewed and the unit, done or not done and
            # idempotent, runs once more on a fresh connection.
            if not exc.connection_invalidated:
                raise
            return unit()

    return await run_in_threadpool(once_more_on_a_dropped_connection)


_RANK = {Role.USER: 0, Role.MODERATOR: 1, Role.ADMIN: 2}


def require_role(minimum: Role):  # noqa: ANN201 - a FastAPI dependency
    """A dependency admitting users whose role is at least ``minimum`` both in the token and
    in the database (a demotion takes effect at once, a promotion at the next login)."""

    def check(user: CurrentUser, claims: ClaimsDep) -> User:
        if min(_RANK[claims.role], _RANK[user.role]) < _RANK[minimum]:
            raise HTTPException(403, f"requires the {minimum.value} role")
        return user

    return check


def has_role(claims: Claims, minimum: Role | str) -> bool:
    """The token's role is at least ``minimum`` (no database read: for read-only views)."""
    return _RANK[claims.role] >= _RANK[Role(minimum)]


ModeratorUser = Annotated[User, Depends(require_role(Role.MODERATOR))]
AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]

# ge=0: a loaded world keeps its data set's user and video ids, which start at 0.
UserIdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="A user id.")]
VideoIdPath = Annotated[int, Path(ge=0, le=MAX_ID, description="A video id.")]
CommentIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="A comment id.")]


class RequestBody(BaseModel):
    """A JSON request body: a field the route does not know is a 422 naming it, not dropped
    without a word (a client sending ``role`` in a profile edit must learn it changed nothing)."""

    model_config = ConfigDict(extra="forbid")


R = TypeVar("R")


async def act_as_user(runtime: Runtime, claims: Claims, action: Callable[[Session, int, int], R],
                      target: int, answer: Callable[[R], T]) -> T:
    """``answer(action(session, user_id, target))`` through :func:`as_user`: the one way the
    idempotent toggle routes (like, save, follow, block and their undos) are written."""
    return await as_user(runtime, claims, lambda session, me: answer(action(session, me, target)),
                         one_write=action in social.ONE_WRITE)
