"""``POST /api/v1/events``: client telemetry (views, watches, skips, shares).

The user comes from the token, never from the body. Stateful actions (like, follow, save,
comment, block, report) are refused here: they go through their own endpoints, which check
and dedupe them, so this route cannot move a counter that has a row behind it. Every event is
checked against the catalog: the video exists and the user may see it, ``watch_ms`` is at
most :data:`MAX_LOOPS` times the video's duration, ``occurred_at`` is inside the window the
workers accept. Accepted events are written to the outbox in one transaction (all of the
batch or none), and the relay carries them to the bus.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from core.clock import utcnow
from core.events import UserInteraction
from platform_services.auth import MAX_ID
from platform_services.bus.outbox import emit
from platform_services.social import visible_videos
from serving.deps import CurrentUser, RequestBody, SessionDep, SettingsDep
from serving.errors import error_responses

router = APIRouter(tags=["events"], responses=error_responses(401, 422))
MAX_AGE = timedelta(days=1)  # older client events are not "real time" for any consumer
MAX_LOOPS = 5  # a short video may loop; a day of watch time on a 15 s clip is not a watch
UNKNOWN_DURATION_MS = 10 * 60 * 1000  # the bound while a video's duration is not known


class InteractionIn(RequestBody):
    action: Literal["view", "watch", "skip", "share"]
    # ge=0: a loaded world keeps its data set's ids, and those start at 0 (the feed serves
    # video 0, so its viewers must be able to report watching it).
    video_id: int = Field(ge=0, le=MAX_ID)
    watch_ms: int | None = Field(default=None, ge=0, le=24 * 3600 * 1000)
    position: int | None = Field(default=None, ge=0, le=10_000)
    request_id: str | None = Field(default=None, max_length=64)
    occurred_at: AwareDatetime | None = None

    @field_validator("occurred_at")
    @classmethod
    def _not_too_old(cls, v: datetime | None) -> datetime | None:
        if v is not None and v < utcnow() - MAX_AGE:
            raise ValueError(f"is older than {MAX_AGE.days} day")
        return v


class EventsIn(RequestBody):
    events: list[InteractionIn] = Field(min_length=1, max_length=500)


class EventsOut(BaseModel):
    accepted: int


def _check_batch(session: SessionDep, settings: SettingsDep, user_id: int,
                 events: list[InteractionIn]) -> None:
    """422 naming ``events.N.<field>`` for what the catalog or the workers would refute: an
    unknown or invisible video, too long a watch, a time further ahead than the feature worker
    accepts (``feature_max_future_s``; it dead-letters those)."""
    videos = visible_videos(session, user_id, {e.video_id for e in events})
    latest = utcnow() + timedelta(seconds=settings.feature_max_future_s)
    errors = []
    for i, e in enumerate(events):
        if e.occurred_at is not None and e.occurred_at > latest:
            errors.append({"loc": ("body", "events", i, "occurred_at"),
                           "msg": "is in the future", "type": "value_error"})
        video = videos.get(e.video_id)
        if video is None:
            errors.append({"loc": ("body", "events", i, "video_id"),
                           "msg": "no such video", "type": "value_error"})
            continue
        bound = MAX_LOOPS * (video.duration_ms or UNKNOWN_DURATION_MS // MAX_LOOPS)
        if e.watch_ms is not None and e.watch_ms > bound:
            errors.append({"loc": ("body", "events", i, "watch_ms"),
                           "msg": f"exceeds {bound} ms for this video", "type": "value_error"})
    if errors:
        raise RequestValidationError(errors)


@router.post("/events", status_code=202)
def post_events(body: EventsIn, user: CurrentUser, session: SessionDep,
                settings: SettingsDep) -> EventsOut:
    _check_batch(session, settings, user.id, body.events)
    events = [
        UserInteraction(
            user_id=user.id,
            **e.model_dump(exclude_none=True, exclude={"occurred_at"}),
            occurred_at=e.occurred_at or utcnow(),
        )
        for e in body.events
    ]
    emit(session, *events)
    session.commit()
    return EventsOut(accepted=len(events))
