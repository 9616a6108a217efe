"""The moderator API: the queue of held or blocked videos, and approve / reject.

Only tokens whose ``role`` claim is ``moderator`` or ``admin`` get in (403 otherwise). What a
decision does is :mod:`platform_services.media.review`'s: approving lets a held video into
feeds and the index; rejecting blocks it and emits ``video.deleted``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from platform_services.media import review
from platform_services.media.uploads import MediaError
from platform_services.storage.models import Moderation
from serving.deps import ModeratorUser, RequestBody, SessionDep
from serving.routes.videos import VideoId, errors

router = APIRouter(prefix="/moderation", tags=["moderation"])


class QueueItemOut(BaseModel):
    video_id: int
    owner_id: int
    title: str
    moderation: str  # needs_review | blocked
    reason: str | None  # the rule, classifier or moderator that decided
    scores: dict[str, float]  # the classifiers' scores
    moderated_by: int | None
    created_at: datetime


class QueueOut(BaseModel):
    items: list[QueueItemOut]
    next_cursor: str | None
    has_more: bool


class DecisionIn(RequestBody):
    action: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=400)


class DecisionOut(BaseModel):
    video_id: int
    moderation: str


@router.get("/queue", responses=errors(401, 403, 422))
def moderation_queue(
    user: ModeratorUser, session: SessionDep,
    status: Annotated[Literal["needs_review", "blocked"], Query()] = "needs_review",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^\d{1,19}$")] = None,
) -> QueueOut:
    """Ready videos waiting for a person (``needs_review``) or blocked, oldest first."""
    items = review.queue(session, Moderation(status), limit + 1, int(cursor or 0))
    more = len(items) > limit
    items = items[:limit]
    return QueueOut(items=[QueueItemOut(**vars(i)) for i in items],
                    next_cursor=str(items[-1].video_id) if more else None, has_more=more)


@router.post("/videos/{video_id}", responses=errors(401, 403, 404, 409, 422))
def decide(video_id: VideoId, body: DecisionIn, user: ModeratorUser,
           session: SessionDep) -> DecisionOut:
    """Approve (into feeds and the index) or reject (blocked, ``video.deleted``) a video."""
    try:
        video = review.decide(session, video_id, user.id, body.action == "approve",
                              body.reason)
    except MediaError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return DecisionOut(video_id=video.id, moderation=video.moderation.value)
