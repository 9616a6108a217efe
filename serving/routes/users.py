"""Profiles and the social graph: ``/users/me``, ``/users/{user_id}``, lookup by username,
owner-only edits, follow and block, and the admin's verification and role switches."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from fastapi import Path as PathParam
from pydantic import AnyHttpUrl, BaseModel, Field, field_validator

from platform_services import accounts, comments, social, users
from platform_services.auth import verify_password
from platform_services.comment_cache import PageCache
from platform_services.storage.models import Role, User
from serving.deps import (
    AdminUser,
    ClaimsDep,
    CurrentUser,
    RequestBody,
    RuntimeDep,
    SessionDep,
    UserIdPath,
    act_as_user,
)
from serving.errors import error_responses
from serving.routes.comments import PageCacheDep, invalidate_pages

router = APIRouter(tags=["users"], responses=error_responses(401, 422, 429))
_404 = error_responses(404)
UsernamePath = Annotated[str, PathParam(min_length=1, max_length=32,
                                        pattern=r"^[A-Za-z0-9_.]+$")]


class StatsOut(BaseModel):
    followers: int
    following: int
    videos: int
    total_likes: int


class ProfileOut(BaseModel):
    """A user as anyone signed in sees them (the design's user shape plus the profile)."""

    user_id: int
    username: str
    display_name: str | None
    bio: str
    profile_image_url: str | None
    verified: bool
    created_at: datetime
    stats: StatsOut
    is_following: bool = False  # whether the caller follows them


class MeOut(ProfileOut):
    """The caller's own profile: also what only they see."""

    id: int
    region: str | None
    role: Role


class ProfileIn(RequestBody):
    """Fields to change; omitted ones stay as they are, ``null`` clears an optional one."""

    display_name: str | None = Field(default=None, min_length=1, max_length=64)
    bio: str | None = Field(default=None, max_length=500)
    avatar_url: AnyHttpUrl | None = Field(default=None)

    @field_validator("avatar_url")
    @classmethod
    def _short_url(cls, v: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if v is not None and len(str(v)) > 1024:
            raise ValueError("at most 1024 characters")
        return v

    @field_validator("display_name")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v


class DeleteAccountIn(RequestBody):
    """The password again: a stolen access token alone cannot delete an account."""

    password: str = Field(min_length=1, max_length=128)


class VerifiedIn(RequestBody):
    verified: bool


class RoleIn(RequestBody):
    role: Role


class FollowOut(BaseModel):
    success: bool = True
    is_following: bool
    changed: bool


class BlockOut(BaseModel):
    success: bool = True
    is_blocking: bool
    changed: bool


def _profile(session: SessionDep, user: User, viewer: User) -> dict:
    c = users.counts(session, user.id, viewer.id)
    return {
        "user_id": user.id, "username": user.username, "display_name": user.display_name,
        "bio": user.bio, "profile_image_url": user.avatar_url, "verified": user.verified,
        "created_at": user.created_at, "stats": StatsOut(**c.__dict__),
        "is_following": viewer.id != user.id and social.follows(session, viewer.id, user.id),
    }


def _me(session: SessionDep, user: User) -> MeOut:
    return MeOut(**_profile(session, user, user), id=user.id, region=user.region,
                 role=user.role)


def _update(session: SessionDep, user: User, body: ProfileIn) -> MeOut:
    changes = body.model_dump(exclude_unset=True)
    if "avatar_url" in changes and changes["avatar_url"] is not None:
        changes["avatar_url"] = str(changes["avatar_url"])
    if changes.get("bio", "") is None:
        changes["bio"] = ""
    users.update_profile(session, user, changes)
    session.commit()
    return _me(session, user)


@router.get("/users/me")
def me(user: CurrentUser, session: SessionDep) -> MeOut:
    return _me(session, user)


@router.patch("/users/me")
def update_me(body: ProfileIn, user: CurrentUser, session: SessionDep) -> MeOut:
    return _update(session, user, body)


def _delete_account(session: SessionDep, user: User, body: DeleteAccountIn,
                    pages: PageCache) -> None:
    if not verify_password(body.password, user.password_hash):
        raise HTTPException(403, "wrong password")
    commented = comments.commented_videos(session, user.id)  # their comments become tombstones
    accounts.delete_account(session, user)
    session.commit()
    invalidate_pages(pages, commented)


@router.delete("/users/me", status_code=204, response_class=Response,
               responses=error_responses(403))
def delete_me(body: DeleteAccountIn, user: CurrentUser, session: SessionDep,
              pages: PageCacheDep) -> None:
    """Delete your account (password required): every token stops working, your videos,
    comments, likes, follows and saves disappear and the counts they moved come back down;
    your username and email become free."""
    _delete_account(session, user, body, pages)


@router.get("/users/by-username/{username}", responses=_404)
def get_by_username(username: UsernamePath, viewer: CurrentUser,
                    session: SessionDep) -> ProfileOut:
    return ProfileOut(**_profile(session, users.by_username(session, username), viewer))


@router.get("/users/{user_id}", responses=_404)
def get_user(user_id: UserIdPath, viewer: CurrentUser, session: SessionDep) -> ProfileOut:
    return ProfileOut(**_profile(session, users.get_user(session, user_id), viewer))


@router.patch("/users/{user_id}", responses=error_responses(403))
def update_user(user_id: UserIdPath, body: ProfileIn, user: CurrentUser,
                session: SessionDep) -> MeOut:
    """Edit a profile: only its owner may (403 for anyone else, admins included)."""
    if user_id != user.id:
        raise HTTPException(403, "only the owner may edit a profile")
    return _update(session, user, body)


@router.delete("/users/{user_id}", status_code=204, response_class=Response,
               responses=error_responses(403))
def delete_user(user_id: UserIdPath, body: DeleteAccountIn, user: CurrentUser,
                session: SessionDep, pages: PageCacheDep) -> None:
    """Delete an account: only its owner may (403 for anyone else); as ``DELETE /users/me``."""
    if user_id != user.id:
        raise HTTPException(403, "only the owner may delete an account")
    _delete_account(session, user, body, pages)


@router.put("/users/{user_id}/verified", responses=error_responses(403, 404))
def set_verified(user_id: UserIdPath, body: VerifiedIn, admin: AdminUser,
                 session: SessionDep) -> ProfileOut:
    """Admins only: the verified badge."""
    user = users.set_verified(session, user_id, body.verified)
    session.commit()
    return ProfileOut(**_profile(session, user, admin))


@router.put("/users/{user_id}/role", responses=error_responses(403, 404))
def set_role(user_id: UserIdPath, body: RoleIn, admin: AdminUser,
             session: SessionDep) -> MeOut:
    """Admins only: make a user a moderator or admin, or demote them."""
    user = users.set_role(session, user_id, body.role)
    session.commit()
    return _me(session, user)


# Each action is one transaction in one thread hop (``as_user``), as the reactions on videos.
@router.post("/users/{user_id}/follow", responses=error_responses(403, 404))
async def follow(user_id: UserIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> FollowOut:
    """Follow a creator (idempotent: a repeat changes nothing; yourself: 422)."""
    return await act_as_user(runtime, claims, social.follow, user_id,
                             lambda changed: FollowOut(is_following=True, changed=changed))


@router.delete("/users/{user_id}/follow")
async def unfollow(user_id: UserIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> FollowOut:
    return await act_as_user(runtime, claims, social.unfollow, user_id,
                             lambda changed: FollowOut(is_following=False, changed=changed))


@router.post("/users/{user_id}/block", responses=_404)
async def block(user_id: UserIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> BlockOut:
    """Block a user: follows end both ways; their videos and comments disappear for you."""
    return await act_as_user(runtime, claims, social.block, user_id,
                             lambda changed: BlockOut(is_blocking=True, changed=changed))


@router.delete("/users/{user_id}/block")
async def unblock(user_id: UserIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> BlockOut:
    return await act_as_user(runtime, claims, social.unblock, user_id,
                             lambda changed: BlockOut(is_blocking=False, changed=changed))
