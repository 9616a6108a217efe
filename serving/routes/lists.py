"""The app's lists: ``/users/{user_id}/followers``, ``/users/{user_id}/following``,
``/users/{user_id}/videos`` (a profile's grid) and the caller's ``/users/me/saved`` videos,
newest first, with keyset cursors (:mod:`platform_services.social_lists`). Videos come as the
shared video card (the feed items' and ``GET /videos/{id}``'s shape)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from platform_services import social_lists
from platform_services.media.models import VideoMedia
from platform_services.storage.models import User, Video, VideoStats, VideoStatus, Visibility
from serving.deps import CurrentUser, SessionDep, UserIdPath
from serving.errors import error_responses
from serving.routes.videos import BlobsDep, SignerDep
from serving.video_card import VideoCard, card_fields

router = APIRouter(tags=["lists"], responses=error_responses(401, 422, 429))

PageSize = Annotated[int, Query(ge=1, le=100)]
ListCursor = Annotated[str | None, Query(max_length=40, pattern=social_lists.CURSOR.pattern,
                                         description="next_cursor of the previous page.")]


class ListedUser(BaseModel):
    user_id: int
    username: str
    display_name: str | None
    profile_image_url: str | None
    verified: bool
    followed_at: datetime  # when this follow started
    is_following: bool  # whether the caller follows them


class UserPage(BaseModel):
    users: list[ListedUser]
    next_cursor: str | None
    has_more: bool


class SavedVideo(VideoCard):
    """The shared video card and when it was saved."""

    saved_at: datetime


class SavedPage(BaseModel):
    videos: list[SavedVideo]
    next_cursor: str | None
    has_more: bool


class ProfileVideo(VideoCard):
    """The shared video card with its state: others only ever see ``ready`` ones."""

    status: VideoStatus  # never "removed"
    visibility: Visibility


class ProfileVideoPage(BaseModel):
    videos: list[ProfileVideo]
    next_cursor: str | None
    has_more: bool


def _users(session: SessionDep, viewer: User, page: social_lists.Page) -> UserPage:
    ids = [u.id for _, u in page.rows]
    followed = social_lists.followed_among(session, viewer.id, ids)
    return UserPage(users=[ListedUser(
        user_id=u.id, username=u.username, display_name=u.display_name,
        profile_image_url=u.avatar_url, verified=u.verified, followed_at=at,
        is_following=u.id in followed) for at, u in page.rows],
        next_cursor=page.next_cursor, has_more=page.next_cursor is not None)


def _cards(session: SessionDep, signer: SignerDep, blobs: BlobsDep, videos: list[Video]
           ) -> list[dict]:
    """The video card fields of a page of videos: their owners, stats and media in 3 reads."""
    ids = [v.id for v in videos]
    owners = {u.id: u for u in session.scalars(
        select(User).where(User.id.in_({v.owner_id for v in videos})))}
    stats = {s.video_id: s for s in session.scalars(
        select(VideoStats).where(VideoStats.video_id.in_(ids)))}
    media = {m.video_id: m for m in session.scalars(
        select(VideoMedia).where(VideoMedia.video_id.in_(ids)))}
    return [card_fields(v, owners[v.owner_id], media.get(v.id), stats.get(v.id), signer, blobs)
            for v in videos]


@router.get("/users/me/saved")
def saved(user: CurrentUser, session: SessionDep, blobs: BlobsDep, signer: SignerDep,
          cursor: ListCursor = None, page_size: PageSize = 20) -> SavedPage:
    """Your saved videos, newest save first; ones you may no longer see are left out."""
    page = social_lists.saved(session, user.id, cursor, page_size)
    cards = _cards(session, signer, blobs, [v for _, v in page.rows])
    return SavedPage(videos=[SavedVideo(**card, saved_at=at)
                             for card, (at, _) in zip(cards, page.rows, strict=True)],
                     next_cursor=page.next_cursor, has_more=page.next_cursor is not None)


@router.get("/users/{user_id}/videos", responses=error_responses(404))
def videos(user_id: UserIdPath, viewer: CurrentUser, session: SessionDep, blobs: BlobsDep,
           signer: SignerDep, cursor: ListCursor = None, page_size: PageSize = 20
           ) -> ProfileVideoPage:
    """A profile's videos, newest first: those you may see (public ones; followers-only ones
    of a creator you follow; none across a block); all but removed ones on your own."""
    page = social_lists.videos(session, viewer.id, user_id, cursor, page_size)
    cards = _cards(session, signer, blobs, [v for _, v in page.rows])
    return ProfileVideoPage(
        videos=[ProfileVideo(**card, status=v.status, visibility=v.visibility)
                for card, (_, v) in zip(cards, page.rows, strict=True)],
        next_cursor=page.next_cursor, has_more=page.next_cursor is not None)


@router.get("/users/{user_id}/followers", responses=error_responses(404))
def followers(user_id: UserIdPath, viewer: CurrentUser, session: SessionDep,
              cursor: ListCursor = None, page_size: PageSize = 20) -> UserPage:
    """Who follows this user, newest first (users across a block with you left out)."""
    return _users(session, viewer, social_lists.followers(session, viewer.id, user_id,
                                                          cursor, page_size))


@router.get("/users/{user_id}/following", responses=error_responses(404))
def following(user_id: UserIdPath, viewer: CurrentUser, session: SessionDep,
              cursor: ListCursor = None, page_size: PageSize = 20) -> UserPage:
    """Whom this user follows, newest first (users across a block with you left out)."""
    return _users(session, viewer, social_lists.following(session, viewer.id, user_id,
                                                          cursor, page_size))
