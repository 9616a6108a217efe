"""Reactions on videos (like, save, share) and reports. Every video route answers 404 for a
video the caller may not see (private, followers-only, not ready, across a block), exactly as
for one that does not exist."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from platform_services import social
from platform_services.auth import MAX_ID
from platform_services.social import Reaction
from platform_services.storage.social_models import ReportReason, ReportStatus, ReportTarget
from serving.deps import (
    ClaimsDep,
    CurrentUser,
    RequestBody,
    RuntimeDep,
    SessionDep,
    VideoIdPath,
    act_as_user,
    as_user,
)
from serving.errors import error_responses

router = APIRouter(tags=["social"], responses=error_responses(401, 404, 422, 429))


class LikeOut(BaseModel):
    success: bool = True
    liked: bool
    changed: bool
    total_likes: int  # counted likes including this call's change


class SaveOut(BaseModel):
    success: bool = True
    saved: bool
    changed: bool


class ShareChannel(StrEnum):
    LINK = "link"
    MESSAGE = "message"
    EMAIL = "email"
    EXTERNAL = "external"


class ShareIn(RequestBody):
    channel: ShareChannel = ShareChannel.LINK


class ShareOut(BaseModel):
    success: bool = True
    share_id: int


class ReportIn(RequestBody):
    target_type: ReportTarget
    target_id: int = Field(ge=0, le=MAX_ID)  # ge=0: world video (and user) ids start at 0
    reason: ReportReason
    details: str = Field(default="", max_length=1000)


class ReportOut(BaseModel):
    report_id: int
    target_type: ReportTarget
    target_id: int
    reason: ReportReason
    status: ReportStatus
    created_at: datetime


def _like_out(r: Reaction) -> LikeOut:
    return LikeOut(liked=r.active, changed=r.changed, total_likes=r.total)


# Each action is one transaction in one thread hop (``as_user``): these are the hottest writes.
@router.post("/videos/{video_id}/like")
async def like(video_id: VideoIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> LikeOut:
    """Like (idempotent: liking twice counts once)."""
    return await act_as_user(runtime, claims, social.like, video_id, _like_out)


@router.delete("/videos/{video_id}/like")
async def unlike(video_id: VideoIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> LikeOut:
    """Unlike (idempotent: without a like it changes nothing; counts never go below 0)."""
    return await act_as_user(runtime, claims, social.unlike, video_id, _like_out)


@router.post("/videos/{video_id}/save")
async def save(video_id: VideoIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> SaveOut:
    return await act_as_user(runtime, claims, social.save, video_id,
                             lambda changed: SaveOut(saved=True, changed=changed))


@router.delete("/videos/{video_id}/save")
async def unsave(video_id: VideoIdPath, claims: ClaimsDep, runtime: RuntimeDep) -> SaveOut:
    return await act_as_user(runtime, claims, social.unsave, video_id,
                             lambda changed: SaveOut(saved=False, changed=changed))


@router.post("/videos/{video_id}/share", status_code=201)
async def share(video_id: VideoIdPath, body: ShareIn, claims: ClaimsDep,
                runtime: RuntimeDep) -> ShareOut:
    """Record a share (each one counts)."""
    return await as_user(runtime, claims, lambda session, me: ShareOut(
        share_id=social.share(session, me, video_id, body.channel.value)))


@router.post("/reports", status_code=201, responses={200: {"model": ReportOut,
             "description": "This user already reported the target: the first report."}})
def report(body: ReportIn, user: CurrentUser, session: SessionDep,
           response: Response) -> ReportOut:
    """Report a video, comment or user to the moderators (one report per user and target)."""
    row, added = social.report(session, user.id, body.target_type, body.target_id,
                               body.reason, body.details)
    session.commit()
    if not added:
        response.status_code = 200
    return ReportOut(report_id=row.id, target_type=row.target_type, target_id=row.target_id,
                     reason=row.reason, status=row.status, created_at=row.created_at)
