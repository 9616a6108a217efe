"""The feed page: the feed routes' ``response_model``, so every body is checked against it
and the OpenAPI spec describes what clients get."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class FeedVideo(BaseModel):
    id: int
    title: str
    duration_ms: int | None
    created_at: datetime


class FeedUser(BaseModel):
    id: int
    username: str


class FeedUrls(BaseModel):
    hls: str
    poster: str


class FeedStats(BaseModel):
    views: int
    likes: int
    shares: int


class FeedItem(BaseModel):
    video: FeedVideo
    user: FeedUser
    urls: FeedUrls
    thumbnail: str
    stats: FeedStats
    source: str  # following | ann | fresh | trending | explore | popular
    position: int  # place in the ranked list, 0-based, across pages


class FeedPage(BaseModel):
    items: list[FeedItem]
    next_cursor: str | None  # opaque; pass back as ?cursor= for the next page
    has_more: bool
    request_id: str  # echo it with interactions (``POST /events``) to join them to exposures
    model_version: str  # the ranker version, or how the list was ordered without one
