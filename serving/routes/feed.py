"""Feeds: for you (the product's main job), trending and following.

All three return :class:`~serving.feed.schemas.FeedPage` with an opaque ``next_cursor``; a
cursor from any of them continues its own list. A degraded response (a dependency down or
slow) is still a 200, with ``X-Reelrank-Degraded`` naming what was missing. Each route is
one hop to a worker thread, where :class:`~serving.feed.pipeline.Feeds` does the whole
request (a for-you next page is served on the event loop: ``Feeds.for_you_page``); the token
is checked on the event loop first (no database read for that: the user row is read with the
rest of the request, and an unknown user is still a 401).

The pipeline builds the body as plain dicts in the model's shape and orjson writes it:
FastAPI's check of a returned dict against the model (validate, then dump) was ~11 % of a
cached page's profile samples. ``response_model`` still documents it, and the tests check
every feed page they get against it (``tests/serving/conftest.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from serving.deps import ClaimsDep, SettingsDep, has_role
from serving.errors import error_responses
from serving.feed.cursor import CursorError
from serving.feed.pipeline import Feeds, Page, UnknownUser
from serving.feed.schemas import FeedPage
from serving.limits import route_limit

router = APIRouter(prefix="/feed", tags=["feed"], responses=error_responses(400, 401, 422, 503))
MAX_PAGE_SIZE = 50
SHED = Counter("reelrank_feed_shed", "First pages refused with 503 at capacity")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def get_feeds(request: Request) -> Feeds:
    feeds = getattr(request.app.state, "feeds", None)
    if feeds is None:
        raise HTTPException(503, "the feed is not running in this process")
    return feeds


FeedsDep = Annotated[Feeds, Depends(get_feeds)]


async def admit(request: Request, feeds: FeedsDep) -> AsyncIterator[None]:
    """Admission control for first pages, before anything else is resolved: past
    ``feed_max_inflight`` a request gets 503 + Retry-After at once instead of queueing behind
    work it will time out waiting for. Cursor pages are cheap and always admitted."""
    if request.query_params.get("cursor"):
        yield
        return
    if feeds.saturated:
        SHED.inc()
        raise HTTPException(503, "the feed is at capacity; retry shortly",
                            headers={"Retry-After": "1"})
    feeds.inflight += 1  # the event loop is one thread: no lock needed
    try:
        yield
    finally:
        feeds.inflight -= 1


Admitted = Annotated[None, Depends(admit)]
PageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Default 20.")]
CursorQ = Annotated[str | None, Query(max_length=512, description="next_cursor of a page.")]
DebugQ = Annotated[bool, Query(description="Add each item's `debug`: candidate source, score, "
                                           "model version, experiment variant.")]


async def debug_allowed(claims: ClaimsDep, settings: SettingsDep, debug: DebugQ = False
                        ) -> bool:
    """``debug`` for roles from ``feed_debug_role`` up, checked before anything else (the
    token's role: a read-only view, so no database read for it)."""
    assert settings.feed_debug_role is not None
    if debug and not has_role(claims, settings.feed_debug_role):
        raise HTTPException(403, f"debug requires the {settings.feed_debug_role} role")
    return debug


DebugAllowed = Annotated[bool, Depends(debug_allowed)]


async def _serve(request: Awaitable[Page]) -> Response:
    """One feed request's page: the body as JSON, its trace as headers."""
    try:
        page = await request
    except CursorError as exc:
        raise HTTPException(400, f"invalid cursor: {exc}") from None
    except UnknownUser:
        raise HTTPException(401, "invalid token: unknown user", headers=_UNAUTHORIZED) from None
    return Response(orjson.dumps(page.body), media_type="application/json",
                    headers=page.headers)


@router.get("/for-you", response_model=FeedPage, responses=error_responses(403))
@route_limit("for_you")
async def for_you(debug: DebugAllowed, _: Admitted, claims: ClaimsDep, feeds: FeedsDep,
                  settings: SettingsDep, page_size: PageSize = None,
                  cursor: CursorQ = None) -> Response:
    """The personalised feed; pass ``cursor`` for the next page of the same list. ``debug``
    is for staff outside ``dev`` (``feed_debug_role``)."""
    return await _serve(feeds.for_you_page(claims.user_id, page_size or settings.feed_page_size,
                                           cursor, debug))


@router.get("/trending", response_model=FeedPage)
async def trending(claims: ClaimsDep, feeds: FeedsDep, settings: SettingsDep,
                   time_range: Literal["24h", "7d", "30d"] = "24h",
                   region: Annotated[str | None, Query(max_length=16)] = None,
                   category: Annotated[str | None, Query(max_length=32)] = None,
                   page_size: PageSize = None, cursor: CursorQ = None) -> Response:
    """Most-engaged videos of a time range, optionally by viewer region and video topic."""
    return await _serve(run_in_threadpool(feeds.trending_page, claims.user_id, time_range,
                                          region, category,
                                          page_size or settings.feed_page_size, cursor))


@router.get("/following", response_model=FeedPage)
async def following(claims: ClaimsDep, feeds: FeedsDep, settings: SettingsDep,
                    page_size: PageSize = None, cursor: CursorQ = None) -> Response:
    """Recent videos of the creators you follow, newest first (hybrid push/pull fan-out)."""
    return await _serve(run_in_threadpool(feeds.following_page, claims.user_id,
                                          page_size or settings.feed_page_size, cursor))
