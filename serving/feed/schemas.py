"""The feed page in the product design's shape (its API section, ``GET /api/v1/feed/for-you``).

``{"videos": [item...], "next_cursor", "has_more"}``; one item shape for every list of videos
(for you, trending, following, later search): ``video_id``, ``user {user_id, username,
display_name, profile_image_url, verified}``, ``title``, ``video_urls`` (``hls`` the master
playlist, then one rendition playlist per quality that exists), ``thumbnail_url``,
``duration`` (seconds), ``stats {views, likes, comments, shares}``, plus our additions:
``created_at``, ``source``, ``position``, ``model_version``, ``request_id``.

These are the routes' return types, so FastAPI checks every body against them and the OpenAPI
spec is what clients get.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FeedUser(BaseModel):
    user_id: int
    username: str
    display_name: str  # the username until the account has a display name
    profile_image_url: str | None
    verified: bool


def _absent(value: Any) -> bool:
    return value is None


class VideoUrls(BaseModel):
    """``hls``: the master playlist (adaptive); each quality: its own rendition playlist,
    present only when that rendition exists (the ladder is never upscaled)."""

    model_config = ConfigDict(populate_by_name=True)

    hls: str
    q360p: str | None = Field(default=None, alias="360p", exclude_if=_absent)
    q720p: str | None = Field(default=None, alias="720p", exclude_if=_absent)
    q1080p: str | None = Field(default=None, alias="1080p", exclude_if=_absent)


class FeedStats(BaseModel):
    views: int
    likes: int
    comments: int
    shares: int


class FeedItem(BaseModel):
    video_id: int
    user: FeedUser
    title: str
    video_urls: VideoUrls
    thumbnail_url: str
    duration: float | None  # seconds; null until the transcoder has measured it
    stats: FeedStats
    created_at: datetime
    source: str  # following | ann | fresh | trending | explore | popular
    position: int  # place in the ranked list, 0-based, across pages
    model_version: str  # the ranker version, or how the list was ordered without one
    request_id: str  # echo it with interactions (``POST /events``) to join them to exposures


class FeedPage(BaseModel):
    videos: list[FeedItem]
    next_cursor: str | None  # opaque; pass back as ?cursor= for the next page
    has_more: bool
