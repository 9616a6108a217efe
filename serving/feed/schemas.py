"""The feed page in the product design's shape (its API section, ``GET /api/v1/feed/for-you``).

``{"videos": [item...], "next_cursor", "has_more"}``; one item shape for every list of videos
(for you, trending, following, later search): the shared
:class:`~serving.video_card.VideoCard` (also ``GET /api/v1/videos/{id}``'s base) plus our
additions ``source``, ``position``, ``model_version``, ``request_id``.

These are the routes' return types, so FastAPI checks every body against them and the OpenAPI
spec is what clients get.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from serving.video_card import VideoCard


class ExperimentArm(BaseModel):
    experiment: str
    variant: str


class FeedDebug(BaseModel):
    """How an item got into the list (``?debug=true`` only; :mod:`serving.feed.debug`)."""

    source: str  # the candidate source (as ``source``)
    position: int
    score: float | None  # what the list was ordered by before re-ranking; None if unscored
    model_version: str
    experiment: str | None  # the viewer's experiment and variant for this list, if any
    variant: str | None
    arms: list[ExperimentArm]  # every (experiment, variant) the list was made for
    degraded: list[str]  # components this page was served without


class FeedItem(VideoCard):
    source: str  # following | ann | fresh | trending | explore | popular
    position: int  # place in the ranked list, 0-based, across pages
    model_version: str  # the ranker version, or how the list was ordered without one
    request_id: str  # echo it with interactions (``POST /events``) to join them to exposures
    # Only with ?debug=true: absent from the default response, whose shape stays the design's.
    debug: FeedDebug | None = Field(default=None, exclude_if=lambda v: v is None)


class FeedPage(BaseModel):
    videos: list[FeedItem]
    next_cursor: str | None  # opaque; pass back as ?cursor= for the next page
    has_more: bool
