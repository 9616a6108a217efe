"""The human side of moderation: the queue of held (and blocked) videos and a moderator's
decision on one.

The automatic verdict (:mod:`platform_services.media.moderation`) is written when a video
becomes ready; ``needs_review`` keeps it out of every feed and the index until a moderator
approves it here. A rejection blocks the video and emits ``video.deleted`` (reason
``moderation``) in the same transaction, so every consumer (search, following feeds) drops it
like a deletion; the catalog drops it from feeds and the ANN index on its next refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.events import VideoDeleted, VideoModerated
from platform_services.bus.outbox import emit
from platform_services.media.models import VideoMedia
from platform_services.media.uploads import MediaError
from platform_services.storage.models import Moderation, Video, VideoStatus

QUEUE_STATUSES = (Moderation.NEEDS_REVIEW, Moderation.BLOCKED)


@dataclass(frozen=True)
class QueueItem:
    video_id: int
    owner_id: int
    title: str
    moderation: str
    reason: str | None
    scores: dict[str, float]
    moderated_by: int | None
    created_at: datetime


def queue(session: Session, status: Moderation, limit: int, after_id: int = 0
          ) -> list[QueueItem]:
    """Ready videos in ``status`` (oldest first, keyset-paged by id)."""
    if status not in QUEUE_STATUSES:
        raise MediaError(422, f"status must be one of {[s.value for s in QUEUE_STATUSES]}")
    rows = session.execute(
        select(Video, VideoMedia).outerjoin(VideoMedia, VideoMedia.video_id == Video.id)
        .where(Video.moderation == status, Video.status == VideoStatus.READY,
               Video.id > after_id)
        .order_by(Video.id).limit(limit)).all()
    return [QueueItem(v.id, v.owner_id, v.title, v.moderation.value,
                      m.moderation_reason if m else None,
                      (m.moderation_scores or {}) if m else {},
                      m.moderated_by if m else None, v.created_at) for v, m in rows]


def decide(session: Session, video_id: int, moderator_id: int, approve: bool,
           reason: str) -> Video:
    """Approve or reject a ready video (commits). Rejecting emits ``video.deleted``."""
    row = session.execute(
        select(Video, VideoMedia).outerjoin(VideoMedia, VideoMedia.video_id == Video.id)
        .where(Video.id == video_id).with_for_update()).first()
    if row is None or row[0].status == VideoStatus.REMOVED:
        raise MediaError(404, f"no video {video_id}")
    video, media = row
    if video.status != VideoStatus.READY:
        raise MediaError(409, f"video {video_id} is {video.status.value}: nothing to moderate")
    was = video.moderation
    video.moderation = Moderation.APPROVED if approve else Moderation.BLOCKED
    if media is not None:
        media.moderation_reason = f"moderator {moderator_id}: {reason}"[:500]
        media.moderated_by, media.moderated_at = moderator_id, utcnow()
    if video.moderation != was:  # search, following feeds and notifications follow it
        emit(session, VideoModerated(video_id=video.id, owner_id=video.owner_id,
                                     moderation=video.moderation.value))
    if not approve and was != Moderation.BLOCKED:
        emit(session, VideoDeleted(video_id=video.id, owner_id=video.owner_id,
                                   reason="moderation"))
    session.commit()
    return video
