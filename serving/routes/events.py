"""``POST /api/v1/events``: clients report watches, likes, shares, skips.

The user comes from the token, never from the body. Accepted events are written to the
outbox in one transaction (all of the batch or none), and the relay carries them to the bus.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from core.clock import utcnow
from core.events import Action, UserInteraction, check_target
from platform_services.bus.outbox import emit
from serving.deps import CurrentUser, SessionDep

router = APIRouter(tags=["events"])
MAX_CLOCK_SKEW = timedelta(minutes=5)


class InteractionIn(BaseModel):
    action: Action
    # ge=0: a loaded world keeps its data set's ids, and those start at 0 (the feed serves
    # video 0, so its viewers must be able to report watching it).
    video_id: int | None = Field(default=None, ge=0)
    author_id: int | None = Field(default=None, ge=0)
    watch_ms: int | None = Field(default=None, ge=0, le=24 * 3600 * 1000)
    position: int | None = Field(default=None, ge=0, le=10_000)
    request_id: str | None = Field(default=None, max_length=64)
    occurred_at: AwareDatetime | None = None

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, v: datetime | None) -> datetime | None:
        if v is not None and v > utcnow() + MAX_CLOCK_SKEW:
            raise ValueError("is in the future")
        return v

    @model_validator(mode="after")
    def _target(self) -> InteractionIn:
        check_target(self.action, self.video_id, self.author_id)
        return self


class EventsIn(BaseModel):
    events: list[InteractionIn] = Field(min_length=1, max_length=500)


class EventsOut(BaseModel):
    accepted: int


@router.post("/events", status_code=202)
def post_events(body: EventsIn, user: CurrentUser, session: SessionDep) -> EventsOut:
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
