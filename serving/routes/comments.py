"""Comments: post (or reply to any comment), list a video's threads and a comment's replies
with cursors, edit (author), delete (author or moderator)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

import orjson
from anyio import from_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from platform_services import comments
from platform_services.auth import MAX_ID
from platform_services.comment_cache import PageCache
from platform_services.storage.models import Role, User
from platform_services.storage.social_models import Comment
from serving.deps import (
    ClaimsDep,
    CommentIdPath,
    CurrentUser,
    RequestBody,
    RuntimeDep,
    SessionDep,
    VideoIdPath,
    as_user,
)
from serving.errors import error_responses

router = APIRouter(tags=["comments"], responses=error_responses(401, 404, 422, 429))
MAX_BODY = 2000


class CommentIn(RequestBody):
    content: str = Field(min_length=1, max_length=MAX_BODY)
    parent_comment_id: int | None = Field(default=None, ge=1, le=MAX_ID)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class CommentEditIn(RequestBody):
    content: str = Field(min_length=1, max_length=MAX_BODY)


class CommentUser(BaseModel):
    user_id: int
    username: str
    display_name: str | None
    profile_image_url: str | None
    verified: bool


class CommentOut(BaseModel):
    comment_id: int
    video_id: int
    parent_comment_id: int | None
    depth: int
    content: str
    deleted: bool
    user: CommentUser | None  # None for a deleted comment
    created_at: datetime
    edited_at: datetime | None
    replies: list[CommentOut] = []
    # Set when this thread has more replies than shown: pass it to .../replies as ``cursor``.
    replies_cursor: str | None = None


class CommentPage(BaseModel):
    comments: list[CommentOut]
    next_cursor: str | None
    has_more: bool


PageSize = Annotated[int, Query(ge=1, le=50)]
ThreadCursor = Annotated[str | None, Query(max_length=20, pattern=r"^[1-9][0-9]{0,18}$",
                                           description="next_cursor of the previous page.")]
ReplyCursor = Annotated[str | None, Query(max_length=2048, pattern=r"^[0-9a-z]+$",
                                          description="replies_cursor or next_cursor.")]


def _fields(node: comments.Node) -> dict:
    """A comment and its replies as :class:`CommentOut`'s fields, in its order: plain dicts
    straight from the :data:`comments.ROW` tuples (which carry their author's columns).
    Validating ~1,000 of them as models and serializing through pydantic cost more CPU than
    the query (``reelrank bench social``)."""
    (cid, video_id, author_id, parent_id, _root, depth, _path, body, created_at, edited_at,
     deleted_at, username, display_name, avatar_url, verified) = node.comment
    deleted = deleted_at is not None
    return {
        "comment_id": cid, "video_id": video_id, "parent_comment_id": parent_id,
        "depth": depth, "content": "" if deleted else body, "deleted": deleted,
        "user": None if deleted else {
            "user_id": author_id, "username": username, "display_name": display_name,
            "profile_image_url": avatar_url, "verified": verified},
        "created_at": created_at, "edited_at": edited_at,
        "replies": [_fields(r) for r in node.replies],
        "replies_cursor": node.more_replies_after,
    }


def _written(c: Comment, author: User) -> CommentOut:
    return CommentOut.model_validate(_fields(comments.Node(comments.as_row(c, author))))


def thread_json(node: comments.Node) -> bytes:
    """One thread (or reply) as :class:`CommentOut` JSON: what the page cache stores."""
    return orjson.dumps(_fields(node), option=orjson.OPT_UTC_Z)


def page_bytes(threads: Iterable[bytes], next_cursor: str | None) -> bytes:
    """:class:`CommentPage` JSON around threads already serialized by :func:`thread_json`
    (cached ones are joined as stored, not parsed and written again)."""
    return b'{"comments":[%s],"next_cursor":%s,"has_more":%s}' % (
        b",".join(threads), orjson.dumps(next_cursor),
        b"false" if next_cursor is None else b"true")


def page_json(page: comments.Page) -> bytes:
    """The page as :class:`CommentPage` JSON, the same bytes pydantic writes (a test checks),
    serialized by orjson from plain dicts (``response_model`` still documents it)."""
    return page_bytes(map(thread_json, page.threads), page.next_cursor)


def _page(page: comments.Page) -> Response:
    return Response(page_json(page), media_type="application/json")


async def get_page_cache(request: Request) -> PageCache:
    """The app's cache of first pages (built on first use: joining the embedded Redis
    blocks, so off the event loop; two first requests may both build one, harmlessly)."""
    state = request.app.state
    cache = getattr(state, "comment_pages", None)
    if cache is None:
        settings = state.runtime.settings
        cache = state.comment_pages = await asyncio.to_thread(
            PageCache.from_settings, settings.redis_url, settings.comment_page_cache_ttl_s)
    return cache


PageCacheDep = Annotated[PageCache, Depends(get_page_cache)]


def invalidate_pages(pages: PageCache, video_ids: list[int]) -> None:
    """From a sync route's worker thread, after its commit: the videos' cached pages are
    stale."""
    from_thread.run(pages.invalidate, video_ids)


@router.post("/videos/{video_id}/comments", status_code=201)
def post_comment(video_id: VideoIdPath, body: CommentIn, user: CurrentUser,
                 session: SessionDep, pages: PageCacheDep) -> CommentOut:
    """Comment on a video, or reply to one of its comments (``parent_comment_id``)."""
    c = comments.add(session, user.id, video_id, body.content, body.parent_comment_id)
    session.commit()
    invalidate_pages(pages, [video_id])
    return _written(c, user)


def _read_page(session: Session, me: int, video_id: int, cursor: int | None, page_size: int,
               replies: int, pages: PageCache, cached: tuple[bytes, bytes | None] | None
               ) -> tuple[bytes, dict[int, bytes], bool]:
    """A page of threads in one transaction (in a worker thread): ``(json, threads to cache,
    whether to cache the page whole)``. ``cached``: :meth:`PageCache.get`'s answer, read
    before this transaction. Threads come from the cache when stored under its version and
    the same for every viewer (none hidden from ``me``); the others from the database."""
    blocked = comments.open_threads(session, me, video_id)
    whole = cached is not None and cursor is None and not blocked  # everyone's first page
    if whole and cached[1] is not None:
        return cached[1], {}, False
    roots = comments.page_roots(session, video_id, cursor, page_size, blocked)
    shared = [r.id for r in roots.rows if roots.shared(r.id)]
    found = from_thread.run(pages.threads, video_id, replies, cached[0], shared) if (
        cached is not None) else {}
    todo = [r for r in roots.rows if r.id not in found]
    read = {n.comment.id: thread_json(n)
            for n in comments.trees(session, todo, roots.hidden.keys(), replies)}
    body = page_bytes((found[r.id] if r.id in found else read[r.id] for r in roots.rows),
                      roots.next_cursor)
    return body, {root: read[root] for root in shared if root in read}, whole


@router.get("/videos/{video_id}/comments", response_model=CommentPage)
async def list_threads(video_id: VideoIdPath, claims: ClaimsDep, runtime: RuntimeDep,
                       pages: PageCacheDep, cursor: ThreadCursor = None,
                       page_size: PageSize = 20,
                       replies: Annotated[int, Query(ge=0, le=200)] = 50) -> Response:
    """A video's threads, newest first, each with up to ``replies`` replies in display order
    (depth first, oldest first); comments of users you blocked are left out."""
    shape = f"{page_size}:{replies}"
    # The version (and a first page) is read before any row (see
    # ``platform_services.comment_cache``). Visibility is checked on every read.
    cached = await pages.get(video_id, shape if cursor is None else None)
    # One transaction and one thread hop (``as_user``): the goal is a 20 ms p99.
    body, threads, whole = await as_user(runtime, claims, lambda session, me: _read_page(
        session, me, video_id, int(cursor) if cursor else None, page_size, replies, pages,
        cached))
    if cached is not None:
        await pages.put_threads(video_id, replies, cached[0], threads)
        if whole:
            await pages.put(video_id, shape, cached[0], body)
    return Response(body, media_type="application/json")


@router.get("/comments/{comment_id}/replies", response_model=CommentPage)
async def list_replies(comment_id: CommentIdPath, claims: ClaimsDep, runtime: RuntimeDep,
                       cursor: ReplyCursor = None, page_size: PageSize = 50) -> Response:
    """All replies under a comment (any depth) in display order, a page at a time."""
    return await as_user(runtime, claims, lambda session, me: _page(
        comments.replies(session, me, comment_id, cursor, page_size)))


@router.patch("/comments/{comment_id}", responses=error_responses(403))
def edit_comment(comment_id: CommentIdPath, body: CommentEditIn, user: CurrentUser,
                 session: SessionDep, pages: PageCacheDep) -> CommentOut:
    """Edit your comment (only its author may)."""
    c = comments.edit(session, user.id, comment_id, body.content)
    session.commit()
    invalidate_pages(pages, [c.video_id])
    return _written(c, user)


@router.delete("/comments/{comment_id}", status_code=204, response_class=Response,
               responses=error_responses(403))
def delete_comment(comment_id: CommentIdPath, user: CurrentUser, claims: ClaimsDep,
                   session: SessionDep, pages: PageCacheDep) -> None:
    """Delete a comment: its author, or a moderator (replies stay, under a tombstone)."""
    moderator = Role.USER not in (claims.role, user.role)  # both token and account say so
    c = comments.delete(session, user.id, comment_id, moderator)
    session.commit()
    invalidate_pages(pages, [c.video_id])
