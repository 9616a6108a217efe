"""Accounts: register, log in (token), who am I."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, EmailStr, Field

from platform_services.auth import (
    ConflictError,
    authenticate,
    issue_token,
    register_user,
    role_of,
)
from serving.deps import CurrentUser, SessionDep, SettingsDep

router = APIRouter(tags=["auth"])


class RegisterIn(BaseModel):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.]+$")
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)
    region: str | None = Field(default=None, max_length=16)


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=128)


class UserOut(BaseModel):
    id: int
    username: str
    region: str | None
    created_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/auth/register", status_code=201)
def register(body: RegisterIn, session: SessionDep) -> UserOut:
    try:
        user = register_user(session, body.username, body.email, body.password, body.region)
    except ConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return UserOut.model_validate(user, from_attributes=True)


@router.post("/auth/token")
def token(body: LoginIn, session: SessionDep, settings: SettingsDep) -> TokenOut:
    user = authenticate(session, body.username, body.password)
    if user is None:
        raise HTTPException(401, "wrong username or password")
    return TokenOut(access_token=issue_token(settings, user.id, role=role_of(settings, user)),
                    expires_in=settings.jwt_ttl_s)


@router.get("/users/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)
