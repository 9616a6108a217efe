"""Accounts: register, log in (token), refresh, log out (``/users/me`` is in ``users``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, EmailStr, Field, field_validator

from platform_services import tokens
from platform_services.auth import ConflictError, authenticate, register_user
from serving.deps import CurrentUser, RequestBody, SessionDep, SettingsDep
from serving.errors import error_responses
from serving.limits import check, route_limit

router = APIRouter(tags=["auth"])
MIN_PASSWORD = 8
_WRONG_LOGIN = "wrong username or password"  # one message whoever asks, existing or not


class RegisterIn(RequestBody):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.]+$")
    email: EmailStr = Field(max_length=254)
    password: str = Field(min_length=MIN_PASSWORD, max_length=128)
    region: str | None = Field(default=None, max_length=16)

    @field_validator("password")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if len(v.strip()) < MIN_PASSWORD:
            raise ValueError(f"needs at least {MIN_PASSWORD} characters besides spaces")
        return v


class LoginIn(RequestBody):
    username: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=128)


class RefreshIn(RequestBody):
    refresh_token: str = Field(min_length=1, max_length=128)


class UserOut(BaseModel):
    id: int
    username: str
    region: str | None
    created_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def _tokens_out(pair: tokens.TokenPair) -> TokenOut:
    return TokenOut(access_token=pair.access_token, expires_in=pair.expires_in,
                    refresh_token=pair.refresh_token,
                    refresh_expires_in=pair.refresh_expires_in)


@router.post("/auth/register", status_code=201, responses=error_responses(409, 422, 429))
@route_limit("signup")
def register(body: RegisterIn, session: SessionDep) -> UserOut:
    try:
        user = register_user(session, body.username, body.email, body.password, body.region)
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return UserOut.model_validate(user, from_attributes=True)


async def _per_account(body: LoginIn, request: Request) -> None:
    """Logins per account from any address (``rate_limit_login_account``): a password
    guessed from many IPs is cut off although each IP stays under the per-IP login limit.
    Counted for unknown names too, so a 429 says nothing about who exists."""
    settings = request.app.state.runtime.settings
    await check(request.app.state.rate_limiter, settings.rate_limit_login_account,
                "login-account", body.username.lower())


@router.post("/auth/token", responses=error_responses(401, 422, 429),
             dependencies=[Depends(_per_account)])
@route_limit("login")
def token(body: LoginIn, session: SessionDep, settings: SettingsDep) -> TokenOut:
    """Log in: a 15-minute access token and a 7-day refresh token (a new login family)."""
    user = authenticate(session, body.username, body.password)
    if user is None:
        raise HTTPException(401, _WRONG_LOGIN)
    pair = tokens.login_tokens(session, settings, user)
    session.commit()
    return _tokens_out(pair)


@router.post("/auth/refresh", responses=error_responses(401, 422, 429))
@route_limit("login")
def refresh(body: RefreshIn, session: SessionDep, settings: SettingsDep) -> TokenOut:
    """Trade a refresh token for a new pair. Each refresh token works once: presenting a used
    one again revokes every token of its login (it was copied)."""
    try:
        pair = tokens.rotate(session, settings, body.refresh_token)
    except tokens.RefreshReuse as exc:
        session.commit()  # the family's revocation must stick although this request fails
        raise HTTPException(401, str(exc)) from None
    except tokens.RefreshError as exc:
        raise HTTPException(401, str(exc)) from None
    session.commit()
    return _tokens_out(pair)


@router.post("/auth/logout", status_code=204, response_class=Response,
             responses=error_responses(401, 422, 429))
def logout(body: RefreshIn, user: CurrentUser, session: SessionDep) -> None:
    """End this login: its refresh tokens stop working (access tokens expire within 15 min)."""
    tokens.logout(session, body.refresh_token, user.id)
    session.commit()


@router.post("/auth/logout-all", status_code=204, response_class=Response,
             responses=error_responses(401, 429))
def logout_all(user: CurrentUser, session: SessionDep) -> None:
    """End every login of the caller."""
    tokens.logout_everywhere(session, user.id)
    session.commit()

