"""Uploads and deletions: the state changes of a video's life outside the transcoder.

``create_upload`` makes the video row (``processing``) and a pre-signed PUT for the source;
``complete_upload`` checks the bytes arrived within the limits and emits ``video.uploaded``
in the same transaction; ``delete_video`` marks the video removed, emits ``video.deleted``
and then deletes its blobs. Visibility decides who may read a video (:func:`can_view`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import Settings
from core.events import VideoDeleted, VideoProcessed, VideoUploaded
from platform_services.bus.outbox import emit
from platform_services.media.models import VideoMedia
from platform_services.storage.blobs import BlobNotFoundError, BlobStore
from platform_services.storage.models import (
    Follow,
    Moderation,
    Video,
    VideoStatus,
    Visibility,
)

log = logging.getLogger(__name__)


class MediaError(Exception):
    """A request the pipeline refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadTicket:
    video_id: int
    upload_url: str
    expires_in: int
    content_type: str
    max_bytes: int


def source_key(video_id: int) -> str:
    return f"uploads/{video_id}/source"


def video_prefix(video_id: int) -> str:
    """Where the transcoder writes a video's ladder, poster, thumbnail and sprite."""
    return f"videos/{video_id}/"


def create_upload(
    session: Session, settings: Settings, blobs: BlobStore, owner_id: int, *, title: str,
    description: str, tags: list[str], category: str | None, visibility: Visibility,
    location: dict | None, music_id: str | None, content_type: str,
) -> UploadTicket:
    """A ``processing`` video and a pre-signed PUT for its source (commits)."""
    if content_type not in settings.upload_content_types:
        raise MediaError(415, f"content_type must be one of {settings.upload_content_types}")
    ttl = settings.upload_url_ttl_s
    video = Video(owner_id=owner_id, title=title, description=description, category=category,
                  visibility=visibility, status=VideoStatus.PROCESSING,
                  moderation=Moderation.PENDING)
    session.add(video)
    session.flush()
    key = source_key(video.id)
    video.blob_key = key
    session.add(VideoMedia(video_id=video.id, tags=tags, location=location, music_id=music_id,
                           content_type=content_type, source_key=key, renditions=[],
                           upload_expires_at=utcnow() + timedelta(seconds=ttl), attempts=0))
    session.commit()
    url = blobs.presign_put(key, ttl, content_type)
    return UploadTicket(video.id, url, ttl, content_type, settings.upload_max_bytes)


def owned_video(session: Session, video_id: int, user_id: int) -> tuple[Video, VideoMedia]:
    """The caller's own uploaded video, for changes; 404 for anyone else (no existence leak)."""
    row = session.execute(
        select(Video, VideoMedia).join(VideoMedia, VideoMedia.video_id == Video.id)
        .where(Video.id == video_id)
    ).first()
    if row is None or row[0].owner_id != user_id or row[0].status == VideoStatus.REMOVED:
        raise MediaError(404, f"no video {video_id}")
    return row[0], row[1]


def complete_upload(
    session: Session, settings: Settings, blobs: BlobStore, video_id: int, user_id: int
) -> Video:
    """The client says its PUT finished: check the bytes, then emit ``video.uploaded`` (commits).
    A source over the size limit fails the video and is deleted (S3 PUTs cannot cap it)."""
    video, media = owned_video(session, video_id, user_id)
    if media.completed_at is not None or video.status != VideoStatus.PROCESSING:
        raise MediaError(409, f"video {video_id} upload is already complete ({video.status})")
    try:
        size = blobs.size(media.source_key)
    except BlobNotFoundError:
        raise MediaError(409, "no uploaded bytes yet: PUT the file to upload_url first") from None
    media.completed_at, media.source_bytes = utcnow(), size
    if size > settings.upload_max_bytes:
        fail(session, video, media, f"file is {size} bytes; the limit is "
                                    f"{settings.upload_max_bytes}")
        session.commit()
        blobs.delete(media.source_key)
        raise MediaError(413, media.failure_reason or "too large")
    emit(session, VideoUploaded(video_id=video.id, owner_id=video.owner_id,
                                blob_key=media.source_key, content_type=media.content_type,
                                size_bytes=size))
    session.commit()
    return video


def fail(session: Session, video: Video, media: VideoMedia, reason: str) -> None:
    """Mark the video failed with ``reason`` and emit its ``video.processed`` (no commit)."""
    video.status = VideoStatus.FAILED
    media.failure_reason = reason[:500]
    emit(session, VideoProcessed(video_id=video.id, owner_id=video.owner_id, status="failed",
                                 visibility=video.visibility.value))


def delete_video(session: Session, blobs: BlobStore, video_id: int, user_id: int) -> None:
    """Owner's delete: ``removed`` + ``video.deleted`` commit together, then the blobs go."""
    video, media = owned_video(session, video_id, user_id)
    video.status = VideoStatus.REMOVED
    emit(session, VideoDeleted(video_id=video.id, owner_id=video.owner_id, reason="owner"))
    session.commit()
    remove_blobs(session, blobs, video.id, media)


def remove_blobs(session: Session, blobs: BlobStore, video_id: int, media: VideoMedia) -> None:
    """Delete a removed video's source and own files, and its ladder once no live video (a
    deduplicated re-upload) still plays from it."""
    blobs.delete(media.source_key)
    own = video_prefix(video_id)
    for key in blobs.list(own):
        if not key.startswith(f"{own}hls/"):
            blobs.delete(key)
    for prefix in {own, media.media_prefix} - {None}:
        if not _ladder_in_use(session, prefix):
            blobs.delete_prefix(f"{prefix}hls/")


def _ladder_in_use(session: Session, prefix: str) -> bool:
    return bool(session.scalar(select(exists().where(
        VideoMedia.media_prefix == prefix, VideoMedia.video_id == Video.id,
        Video.status != VideoStatus.REMOVED,
    ))))


def can_view(session: Session, video: Video, user_id: int) -> bool:
    """Owners see everything of theirs but removed videos; others see ready, approved videos
    that are public, or followers-only when they follow the owner. Private never leaks."""
    if video.status == VideoStatus.REMOVED:
        return False
    if video.owner_id == user_id:
        return True
    if video.status != VideoStatus.READY or video.moderation != Moderation.APPROVED:
        return False
    if video.visibility == Visibility.PUBLIC:
        return True
    if video.visibility == Visibility.FOLLOWERS:
        return bool(session.scalar(select(exists().where(
            Follow.follower_id == user_id, Follow.followee_id == video.owner_id))))
    return False
