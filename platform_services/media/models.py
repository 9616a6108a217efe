"""What the media pipeline keeps per video beside the ``videos`` row: upload metadata, the
source's probe, the rendition ladder and where it lives, the moderation decision, and the
content embedding of a new video."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime


class VideoMedia(Base):
    """One row per uploaded video (videos loaded from data sets have none)."""

    __tablename__ = "video_media"

    video_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    location: Mapped[dict | None] = mapped_column(JSON)
    music_id: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))
    source_key: Mapped[str] = mapped_column(String(1024))
    upload_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64), index=True)  # SHA-256 of the source
    # Blob prefix of the HLS ladder (``videos/<id>/``; a deduplicated upload shares another's).
    media_prefix: Mapped[str | None] = mapped_column(String(1024))
    probe: Mapped[dict | None] = mapped_column(JSON)
    renditions: Mapped[list[dict]] = mapped_column(JSON, default=list)
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    moderation_reason: Mapped[str | None] = mapped_column(String(500))
    moderation_scores: Mapped[dict | None] = mapped_column(JSON)
    moderated_by: Mapped[int | None] = mapped_column(BigInteger)  # a moderator; None: automatic
    moderated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # float32 bytes of the offline encoders' text (+ image) embedding, and which encoders.
    content_embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_encoder: Mapped[str | None] = mapped_column(String(64))
    # When the video became ready (the clock of "recommendable within seconds of ready").
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # float32 bytes of the item tower's output for the retrieval version ``item_vector_model``
    # (``reelrank-retrieval/3``): the ANN index adds it as is when it serves that version.
    item_vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    item_vector_model: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
