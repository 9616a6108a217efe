"""Videos: upload (a pre-signed PUT), complete, read, delete.

The client ``POST``s the metadata, ``PUT``s the file straight to blob storage at
``upload_url`` (S3, or the local store's signed route), then ``POST``s ``/complete``; the
transcode worker takes it from ``video.uploaded``. Only the owner changes a video; reading
respects visibility, and a video the caller may not see is a 404 like one that never existed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import exists, select
from starlette.concurrency import run_in_threadpool

from platform_services.media import uploads
from platform_services.media.delivery import SPRITE_VTT, PlaylistSigner
from platform_services.media.models import VideoMedia
from platform_services.storage.blobs import BlobStore
from platform_services.storage.models import User, Video, VideoStats, Visibility
from platform_services.storage.social_models import Like, Save
from serving.deps import CurrentUser, RequestBody, SessionDep, SettingsDep
from serving.video_card import VideoCard, card_fields

router = APIRouter(prefix="/videos", tags=["videos"])

Tag = Annotated[str, StringConstraints(min_length=1, max_length=50,
                                       pattern=r"^[\w\-]+$", strip_whitespace=True)]
# ge=0: a loaded world's video ids start at 0, and the feed serves those videos.
VideoId = Annotated[int, Path(ge=0, le=2**62)]


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[dict[str, Any]] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers (the shared JSON error body)."""
    return {c: {"model": ErrorOut} for c in codes}


async def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


async def get_signer(request: Request) -> PlaylistSigner:
    return request.app.state.playlists


BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
SignerDep = Annotated[PlaylistSigner, Depends(get_signer)]


class Location(BaseModel):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    city: str | None = Field(default=None, max_length=100)


class UploadIn(RequestBody):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    tags: list[Tag] = Field(default_factory=list, max_length=30)
    category: str | None = Field(default=None, min_length=1, max_length=32,
                                 pattern=r"^[\w\-]+$")
    visibility: Visibility = Visibility.PUBLIC
    location: Location | None = None
    music_id: str | None = Field(default=None, min_length=1, max_length=64,
                                 pattern=r"^[\w\-]+$")
    content_type: str = Field(default="video/mp4", max_length=64)


class UploadOut(BaseModel):
    upload_url: str  # PUT the file here, with the Content-Type below, before it expires
    video_id: int
    expires_in: int  # seconds
    content_type: str
    max_bytes: int


class CompleteOut(BaseModel):
    video_id: int
    status: str


class DeleteOut(BaseModel):
    success: bool
    message: str


class InteractionOut(BaseModel):
    """The caller's own like and save of the video (the design's ``user_interaction``)."""

    liked: bool
    saved: bool


class VideoOut(VideoCard):
    """The shared :class:`~serving.video_card.VideoCard` and what only this route shows."""

    description: str
    tags: list[str]
    category: str | None
    visibility: str
    status: str  # processing | ready | failed
    moderation: str  # pending | approved | needs_review | blocked
    failure_reason: str | None  # shown to the owner only
    poster_url: str | None
    sprite_url: str | None  # a WebVTT of thumbnail tiles for scrubbing
    width: int | None
    height: int | None
    user_interaction: InteractionOut


@router.post("/upload", status_code=201, responses=errors(401, 415, 422))
def create_upload(body: UploadIn, user: CurrentUser, session: SessionDep,
                  settings: SettingsDep, blobs: BlobsDep) -> UploadOut:
    """Create the video (``processing``) and a pre-signed PUT for its file."""
    try:
        ticket = uploads.create_upload(
            session, settings, blobs, user.id, title=body.title, description=body.description,
            tags=body.tags, category=body.category, visibility=body.visibility,
            location=body.location.model_dump() if body.location else None,
            music_id=body.music_id, content_type=body.content_type)
    except uploads.MediaError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return UploadOut(upload_url=ticket.upload_url, video_id=ticket.video_id,
                     expires_in=ticket.expires_in, content_type=ticket.content_type,
                     max_bytes=ticket.max_bytes)


@router.post("/{video_id}/complete", status_code=202, responses=errors(401, 404, 409, 413))
def complete_upload(video_id: VideoId, user: CurrentUser, session: SessionDep,
                    settings: SettingsDep, blobs: BlobsDep) -> CompleteOut:
    """The file is uploaded: queue the transcode (``video.uploaded``)."""
    try:
        video = uploads.complete_upload(session, settings, blobs, video_id, user.id)
    except uploads.MediaError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return CompleteOut(video_id=video.id, status=video.status.value)


@router.get("/{video_id}", responses=errors(401, 404))
def get_video(video_id: VideoId, user: CurrentUser, session: SessionDep, blobs: BlobsDep,
              signer: SignerDep) -> VideoOut:
    """A video with its media URLs, if the caller may see it."""
    row = session.execute(
        select(Video, User, VideoMedia, VideoStats)
        .join(User, User.id == Video.owner_id)
        .outerjoin(VideoMedia, VideoMedia.video_id == Video.id)
        .outerjoin(VideoStats, VideoStats.video_id == Video.id)
        .where(Video.id == video_id)
    ).first()
    if row is None or not uploads.can_view(session, row[0], user.id):
        raise HTTPException(404, f"no video {video_id}")
    liked, saved = session.execute(select(*(
        exists().where(t.user_id == user.id, t.video_id == video_id) for t in (Like, Save)
    ))).one()
    return _video_out(*row, viewer_id=user.id, blobs=blobs, signer=signer,
                      ttl_s=signer.ttl_s, interaction=InteractionOut(liked=liked, saved=saved))


@router.delete("/{video_id}", responses=errors(401, 404))
async def delete_video(video_id: VideoId, user: CurrentUser, session: SessionDep,
                       blobs: BlobsDep) -> DeleteOut:
    """The owner takes the video down: ``removed``, ``video.deleted``, renditions deleted."""
    try:
        await run_in_threadpool(uploads.delete_video, session, blobs, video_id, user.id)
    except uploads.MediaError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return DeleteOut(success=True, message=f"video {video_id} deleted")


def _video_out(video: Video, owner: User, media: VideoMedia | None, stats: VideoStats | None,
               *, viewer_id: int, blobs: BlobStore, signer: PlaylistSigner,
               ttl_s: int, interaction: InteractionOut) -> VideoOut:
    card = card_fields(video, owner, media, stats, signer, blobs)
    probe = (media.probe if media is not None else None) or {}
    poster = sprite = None
    if card["video_urls"].hls is not None:
        poster = blobs.presign_get(f"{uploads.video_prefix(video.id)}poster.jpg", ttl_s)
        sprite = signer.url(video.id, SPRITE_VTT)
    return VideoOut(
        **card, description=video.description or "",
        tags=list(media.tags) if media is not None else [], category=video.category,
        visibility=video.visibility.value, status=video.status.value,
        moderation=video.moderation.value,
        failure_reason=media.failure_reason if media and viewer_id == owner.id else None,
        poster_url=poster, sprite_url=sprite,
        width=probe.get("display_width"), height=probe.get("display_height"),
        user_interaction=interaction,
    )
