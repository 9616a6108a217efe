"""Feeds: for you (the product's main job), trending and following.

All three return the same page shape with an opaque ``next_cursor``; a cursor from any of them
continues its own list. A degraded response (a dependency down or slow) is still a 200, with
``X-Reelrank-Degraded`` naming what was missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from serving.deps import CurrentUser, SessionDep, SettingsDep
from serving.errors import error_responses
from serving.feed.cursor import CursorError
from serving.feed.degrade import Trace
from serving.feed.pipeline import Feeds
from serving.feed.schemas import FeedPage
from serving.limits import RateLimit

router = APIRouter(prefix="/feed", tags=["feed"], responses=error_responses(400, 401, 422, 503))
MAX_PAGE_SIZE = 50
SHED = Counter("reelrank_feed_shed", "First pages refused with 503 at capacity")


async def get_feeds(request: Request) -> Feeds:
    feeds = getattr(request.app.state, "feeds", None)
    if feeds is None:
        raise HTTPException(503, "the feed is not running in this process")
    return feeds


FeedsDep = Annotated[Feeds, Depends(get_feeds)]


async def admit(request: Request, feeds: FeedsDep) -> AsyncIterator[None]:
    """Admission control for first pages, before auth and the DB session are even resolved:
    past ``feed_max_inflight`` a request gets 503 + Retry-After at once instead of queueing
    behind work it will time out waiting for. Cursor pages are cheap and always admitted."""
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


def _respond(body: dict, trace: Trace, response: Response) -> dict:
    """``body`` with the trace's headers; FastAPI checks and serialises it as a FeedPage."""
    response.headers.update(trace.headers())
    return body


async def _continue(feeds: Feeds, session, user, cursor: str, size: int,  # noqa: ANN001
                    trace: Trace) -> dict | None:
    try:
        return await run_in_threadpool(feeds.next_page, session, user, cursor, size, trace)
    except CursorError as exc:
        raise HTTPException(400, f"invalid cursor: {exc}") from None


@router.get("/for-you", response_model=FeedPage,
            dependencies=[Depends(RateLimit("for_you"))])
async def for_you(_: Admitted, user: CurrentUser, session: SessionDep, feeds: FeedsDep,
                  settings: SettingsDep, response: Response, page_size: PageSize = None,
                  cursor: CursorQ = None) -> dict:
    """The personalised feed; pass ``cursor`` for the next page of the same list."""
    size = page_size or settings.feed_page_size
    if cursor:
        trace = Trace()
        body = await _continue(feeds, session, user, cursor, size, trace)
        if body is not None:
            return _respond(body, trace, response)
    body, trace = await feeds.for_you(session, user, size)
    return _respond(body, trace, response)


@router.get("/trending", response_model=FeedPage)
async def trending(user: CurrentUser, session: SessionDep, feeds: FeedsDep,
                   settings: SettingsDep, response: Response,
                   time_range: Literal["24h", "7d", "30d"] = "24h",
                   region: Annotated[str | None, Query(max_length=16)] = None,
                   category: Annotated[str | None, Query(max_length=32)] = None,
                   page_size: PageSize = None, cursor: CursorQ = None) -> dict:
    """Most-engaged videos of a time range, optionally by viewer region and video topic."""
    size, trace = page_size or settings.feed_page_size, Trace()
    body = await _continue(feeds, session, user, cursor, size, trace) if cursor else None
    if body is None:
        body = await run_in_threadpool(feeds.trending, session, user, time_range, region,
                                       category, size, trace)
    return _respond(body, trace, response)


@router.get("/following", response_model=FeedPage)
async def following(user: CurrentUser, session: SessionDep, feeds: FeedsDep,
                    settings: SettingsDep, response: Response, page_size: PageSize = None,
                    cursor: CursorQ = None) -> dict:
    """Recent videos of the creators you follow, newest first."""
    size, trace = page_size or settings.feed_page_size, Trace()
    body = await _continue(feeds, session, user, cursor, size, trace) if cursor else None
    if body is None:
        body = await run_in_threadpool(feeds.following, session, user, size, trace)
    return _respond(body, trace, response)
