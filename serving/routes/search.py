"""``GET /search/videos`` and ``GET /search/users`` (issue 15).

Video search blends the engine's lexical score with MiniLM similarity (see
:mod:`platform_services.search.service`); the encoder loads in the background when the first
search arrives, and until it is there searches are lexical only, with
``X-Reelrank-Degraded: semantic``. Both lists page with signed offset cursors bound to the
query, its filters and its sort.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from platform_services.media.models import VideoMedia
from platform_services.search.backends import EXACT_TOTAL_UP_TO, VideoFilter
from platform_services.search.semantic import SemanticIndex
from platform_services.search.service import (
    DURATIONS,
    VideoHit,
    VideoSearch,
    query_hash,
    search_users,
)
from platform_services.signing import TokenError, sign, unsign
from platform_services.storage.models import User
from serving.deps import CurrentUser, SessionDep, SettingsDep
from serving.errors import error_responses
from serving.feed.degrade import HEADER
from serving.video_card import VideoCard, VideoStatsOut, VideoUrls, VideoUser, playback_urls

router = APIRouter(prefix="/search", tags=["search"],
                   responses=error_responses(400, 401, 422, 429))
MAX_OFFSET = 2000  # deeper than any candidate list: a cursor past it is forged or stale

Q = Annotated[str, Query(min_length=1, max_length=200, description="What to look for.")]
PageSize = Annotated[int, Query(ge=1, le=50)]
CursorQ = Annotated[str | None, Query(max_length=512, description="next_cursor of a page.")]


class SearchUserOut(BaseModel):
    user_id: int
    username: str
    display_name: str | None
    profile_image_url: str | None
    verified: bool


class SearchVideoOut(VideoCard):
    """The shared video card (playback URLs only for a stored ladder) and its relevance."""

    relevance: float  # the blended score this list was ordered by (for sort=relevance)


class VideoSearchPage(BaseModel):
    videos: list[SearchVideoOut]
    next_cursor: str | None
    has_more: bool
    total_results: int = Field(description=(
        "Videos that hold any word of q (under the filters), less those hidden from you, plus "
        "the semantic-only hits. Exact when total_results_exact is true. Otherwise an estimate, "
        "like \"about N results\": past "
        f"{EXACT_TOTAL_UP_TO:,} matches PostgreSQL reports its planner's estimate, and a "
        "relevance page checks visibility for its best candidates only."))
    total_results_exact: bool = Field(description="Whether total_results is an exact count.")


class UserResult(SearchUserOut):
    followers: int


class UserSearchPage(BaseModel):
    users: list[UserResult]
    next_cursor: str | None
    has_more: bool


class _Engine:
    """One per app: the semantic index and the query encoder (loaded in the background)."""

    def __init__(self, request: Request) -> None:
        settings = request.app.state.runtime.settings
        self.index = SemanticIndex(request.app.state.runtime.sessions, settings.search_refresh_s)
        self.search = VideoSearch(self.index, None, settings.search_lexical_weight,
                                  settings.search_candidates, settings.search_min_similarity)
        self.stopped = threading.Event()
        self.ready = threading.Event()  # set once queries are encoded (semantic search on)
        threading.Thread(target=self._load, name="search-encoder", daemon=True).start()

    def _load(self) -> None:
        from training.content import load_text_encoder

        model = load_text_encoder()

        @lru_cache(maxsize=4096)  # popular queries repeat: encode each once
        def one(text: str) -> np.ndarray:
            return model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)[0]

        self.index.refresh()
        self.search.encode = lambda texts: np.stack([one(t) for t in texts])
        self.ready.set()
        self.index.run(self.stopped)  # this daemon thread now keeps the index fresh


def close_engine(app: FastAPI) -> None:
    """Stop the app's index refresh (at shutdown: the database goes away next)."""
    if (found := getattr(app.state, "search_engine", None)) is not None:
        found.stopped.set()


_engine_lock = threading.Lock()


def engine(request: Request) -> _Engine:
    with _engine_lock:
        if getattr(request.app.state, "search_engine", None) is None:
            request.app.state.search_engine = _Engine(request)
        return request.app.state.search_engine


def _offset(secret, kind: str, user_id: int, cursor: str | None,  # noqa: ANN001
            digest: str) -> int:
    if not cursor:
        return 0
    try:
        body = unsign(secret, kind, user_id, cursor)
    except TokenError as exc:
        raise HTTPException(400, f"invalid cursor: {exc}") from None
    offset = body.get("o")
    if body.get("h") != digest:
        raise HTTPException(400, "invalid cursor: it belongs to another query")
    if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise HTTPException(400, "invalid cursor: malformed cursor")
    return offset


def _render(request: Request, session: Session, hits: list[VideoHit]) -> list[SearchVideoOut]:
    """The hits as video cards: their creators and stored ladders read in one query each
    (a video imported without media, or whose ladder is gone, has no playback URLs)."""
    ids = [h.video_id for h in hits]
    owners = {u.id: u for u in session.scalars(
        select(User).where(User.id.in_({h.owner_id for h in hits})))}
    ladders = dict(session.execute(select(VideoMedia.video_id, VideoMedia.renditions)
                                   .where(VideoMedia.video_id.in_(ids))).all())
    playlists, blobs = request.app.state.playlists, request.app.state.blobs
    out = []
    for h in hits:
        rungs = [r["name"] for r in ladders.get(h.video_id) or ()]
        urls = playback_urls(playlists, blobs, h.video_id, rungs, playlists.ttl_s) \
            if rungs else {}
        thumbnail = urls.pop("thumbnail", None)
        out.append(SearchVideoOut(
            video_id=h.video_id, user=VideoUser.of(owners[h.owner_id]), title=h.title,
            video_urls=VideoUrls(hls=urls.pop("hls", None), **urls), thumbnail_url=thumbnail,
            duration=h.duration_ms / 1000 if h.duration_ms is not None else None,
            stats=VideoStatsOut(views=h.views, likes=h.likes, comments=h.comments,
                                shares=h.shares),
            created_at=h.created_at, relevance=round(h.relevance, 6)))
    return out


@router.get("/videos", response_model=VideoSearchPage)
def search_videos(request: Request, response: Response, user: CurrentUser,
                  session: SessionDep, settings: SettingsDep, q: Q,
                  category: Annotated[str | None, Query(max_length=32,
                                                        pattern=r"^[\w-]+$")] = None,
                  duration: Literal["short", "medium", "long"] | None = None,
                  sort: Literal["relevance", "views", "recent"] = "relevance",
                  page_size: PageSize = 20, cursor: CursorQ = None) -> dict:
    """Public, ready videos by title, description, hashtags and creator, blended with
    semantic similarity; ``total_results`` counts lexical matches plus semantic-only hits
    (an estimate past a bound: see ``total_results_exact``)."""
    digest = query_hash(q, category, duration, sort)
    offset = _offset(settings.signing_secret, "search-videos", user.id, cursor, digest)
    lo, hi = DURATIONS[duration] if duration else (None, None)
    eng = engine(request)
    page = eng.search.search(session, user.id, q, VideoFilter(category, lo, hi), sort, offset,
                             page_size)
    if not page.semantic:
        response.headers[HEADER] = "semantic"
    token = sign(settings.signing_secret, "search-videos", user.id,
                 {"o": offset + page_size, "h": digest}) if page.more else None
    return {"videos": _render(request, session, page.hits), "next_cursor": token,
            "has_more": token is not None, "total_results": page.total,
            "total_results_exact": page.total_exact}


@router.get("/users", response_model=UserSearchPage)
def search_users_route(user: CurrentUser, session: SessionDep, settings: SettingsDep, q: Q,
                       page_size: PageSize = 20, cursor: CursorQ = None) -> dict:
    """Accounts whose username or display name has words starting with the query's words."""
    digest = query_hash(q)
    offset = _offset(settings.signing_secret, "search-users", user.id, cursor, digest)
    found, more = search_users(session, user.id, q, offset, page_size)
    token = sign(settings.signing_secret, "search-users", user.id,
                 {"o": offset + page_size, "h": digest}) if more else None
    return {"users": [{"user_id": u.id, "username": u.username,
                       "display_name": u.display_name, "profile_image_url": u.avatar_url,
                       "verified": u.verified, "followers": n} for u, n in found],
            "next_cursor": token, "has_more": token is not None}

