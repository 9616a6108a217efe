"""``GET /notifications`` (newest first, unread count, keyset cursor) and
``POST /notifications/read`` (the caller's own, by id or all)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field, model_validator

from platform_services import notifications as notes
from platform_services.auth import MAX_ID
from platform_services.signing import TokenError, sign, unsign
from serving.deps import CurrentUser, RequestBody, SessionDep, SettingsDep
from serving.errors import error_responses

router = APIRouter(prefix="/notifications", tags=["notifications"],
                   responses=error_responses(400, 401, 422, 429))
KIND = "notifications"


class ActorOut(BaseModel):
    user_id: int
    username: str


class NotificationOut(BaseModel):
    id: int
    kind: str  # like | comment | reply | follow | upload
    message: str  # "u1 and 41 others liked your video"
    actors: list[ActorOut]  # the latest few, newest first
    actor_count: int
    video_id: int | None
    comment_id: int | None
    created_at: datetime
    updated_at: datetime
    read: bool


class NotificationPage(BaseModel):
    notifications: list[NotificationOut]
    unread_count: int
    next_cursor: str | None
    has_more: bool


class MarkReadIn(RequestBody):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(default=None,
                                                                     max_length=100)
    all: bool = False

    @model_validator(mode="after")
    def _one(self) -> MarkReadIn:
        if (self.ids is None) == (not self.all):
            raise ValueError("give either ids or all=true")
        return self


class MarkReadOut(BaseModel):
    updated: int
    unread_count: int


@router.get("", response_model=NotificationPage)
def list_notifications(user: CurrentUser, session: SessionDep, settings: SettingsDep,
                       page_size: Annotated[int, Query(ge=1, le=50)] = 20,
                       cursor: Annotated[str | None, Query(max_length=512)] = None,
                       unread_only: bool = False) -> dict:
    """Your notifications, aggregated per video / comment / kind while unread."""
    before = None
    if cursor:
        try:
            body = unsign(settings.signing_secret, KIND, user.id, cursor)
            before = (datetime.fromtimestamp(int(body["t"]) / 1e6, UTC), int(body["i"]))
        except (TokenError, KeyError, TypeError, ValueError, OverflowError) as exc:
            raise HTTPException(400, f"invalid cursor: {exc}") from None
    rows, more = notes.page(session, user.id, page_size, before, unread_only)
    names = notes.usernames(session, rows)
    token = None
    if more and rows:
        last = rows[-1]
        token = sign(settings.signing_secret, KIND, user.id,
                     {"t": int(last.updated_at.timestamp() * 1e6), "i": last.id})
    return {
        "notifications": [{
            "id": r.id, "kind": r.kind, "message": notes.message(r, names),
            "actors": [{"user_id": a, "username": names[a]} for a in r.actor_ids or []
                       if a in names],
            "actor_count": r.actor_count, "video_id": r.video_id, "comment_id": r.comment_id,
            "created_at": r.created_at, "updated_at": r.updated_at,
            "read": r.read_at is not None} for r in rows],
        "unread_count": notes.unread_count(session, user.id),
        "next_cursor": token, "has_more": token is not None,
    }


@router.post("/read")
def mark_read(body: MarkReadIn, user: CurrentUser, session: SessionDep) -> MarkReadOut:
    """Mark your notifications read: ``{"ids": [...]}`` (up to 100) or ``{"all": true}``.
    Ids that are not yours, or already read, are left alone."""
    updated = notes.mark_read(session, user.id, None if body.all else body.ids)
    session.commit()
    return MarkReadOut(updated=updated, unread_count=notes.unread_count(session, user.id))
