"""The app's lists: ``/users/{user_id}/followers``, ``/users/{user_id}/following`` and the
caller's ``/users/me/saved`` videos, newest first, with keyset cursors
(:mod:`platform_services.social_lists`). Saved videos come in the feed's item shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from platform_services import social_lists
from platform_services.storage.blobs import open_blob_store
from platform_services.storage.models import User, VideoStats
from serving.deps import CurrentUser, SessionDep, UserIdPath
from serving.errors import error_responses
from serving.feed.render import MediaUrls
from serving.feed.schemas import FeedStats, FeedUrls, FeedUser, FeedVideo

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


class SavedItem(BaseModel):
    """The feed item's shape (video, user, urls, thumbnail, stats) and when it was saved."""

    video: FeedVideo
    user: FeedUser
    urls: FeedUrls
    thumbnail: str
    stats: FeedStats
    saved_at: datetime


class SavedPage(BaseModel):
    items: list[SavedItem]
    next_cursor: str | None
    has_more: bool


def media_urls(request: Request) -> MediaUrls:
    """One pre-signing cache per app (built on first use)."""
    state = request.app.state
    if getattr(state, "media_urls", None) is None:
        state.media_urls = MediaUrls(open_blob_store(state.runtime.settings))
    return state.media_urls


def _users(session: SessionDep, viewer: User, page: social_lists.Page) -> UserPage:
    ids = [u.id for _, u in page.rows]
    followed = social_lists.followed_among(session, viewer.id, ids)
    return UserPage(users=[ListedUser(
        user_id=u.id, username=u.username, display_name=u.display_name,
        profile_image_url=u.avatar_url, verified=u.verified, followed_at=at,
        is_following=u.id in followed) for at, u in page.rows],
        next_cursor=page.next_cursor, has_more=page.next_cursor is not None)


@router.get("/users/me/saved")
def saved(user: CurrentUser, session: SessionDep,
          urls: Annotated[MediaUrls, Depends(media_urls)], cursor: ListCursor = None,
          page_size: PageSize = 20) -> SavedPage:
    """Your saved videos, newest save first; ones you may no longer see are left out."""
    page = social_lists.saved(session, user.id, cursor, page_size)
    videos = [v for _, v in page.rows]
    owners = {u.id: u for u in session.scalars(
        select(User).where(User.id.in_({v.owner_id for v in videos})))}
    stats = {s.video_id: s for s in session.scalars(
        select(VideoStats).where(VideoStats.video_id.in_([v.id for v in videos])))}
    items = []
    for at, v in page.rows:
        media, st = urls.get(v.id), stats.get(v.id)
        items.append(SavedItem(
            video=FeedVideo(id=v.id, title=v.title, duration_ms=v.duration_ms,
                            created_at=v.created_at),
            user=FeedUser(id=v.owner_id, username=owners[v.owner_id].username),
            urls=FeedUrls(hls=media["hls"], poster=media["poster"]),
            thumbnail=media["thumbnail"],
            stats=FeedStats(views=st.views if st else 0, likes=st.likes if st else 0,
                            shares=st.shares if st else 0),
            saved_at=at))
    return SavedPage(items=items, next_cursor=page.next_cursor,
                     has_more=page.next_cursor is not None)


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
