"""Request dependencies: ``SettingsDep``, ``SessionDep``, ``CurrentUser``, ``AdminUser``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.config import Settings
from platform_services.auth import ADMIN, AuthError, claims_from_token, user_id_from_token
from platform_services.runtime import Runtime
from platform_services.storage.models import User


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


def get_current_user(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers=_UNAUTHORIZED)
    try:
        user_id = user_id_from_token(settings, credentials.credentials)
    except AuthError as exc:
        raise HTTPException(401, f"invalid token: {exc}", headers=_UNAUTHORIZED) from None
    user = session.get(User, user_id)
    session.commit()  # end the read: the connection goes back to the pool (``user`` stays
    # loaded), so a request waiting on something else holds none
    if user is None:
        raise HTTPException(401, "invalid token: unknown user", headers=_UNAUTHORIZED)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(
    user: CurrentUser,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The current user if their token carries the ``admin`` role; 403 otherwise."""
    assert credentials is not None  # get_current_user answered 401 without one
    if claims_from_token(settings, credentials.credentials)[1] != ADMIN:
        raise HTTPException(403, "this route needs the admin role")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
