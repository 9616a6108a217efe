"""The notifications table (issue 15): one row per recipient and group while unread.

``group_key`` says what aggregates (``like:video:42``, ``comment:video:42``,
``reply:comment:7``, ``follow``, ``upload``): while a row of that group is unread, new events
of the group update it (``actor_count``, the latest ``actor_ids``, ``updated_at``) instead of
adding rows, so "u1 and 41 others liked your video" is one row however viral the video. The
partial unique index (unread rows only) is what the worker's upsert conflicts on; once read, the
next event of the group starts a new row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime

MAX_ACTORS = 3  # actors kept per row for display; the count has the rest


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("uq_notifications_unread_group", "user_id", "group_key", unique=True,
              sqlite_where=text("read_at IS NULL"), postgresql_where=text("read_at IS NULL")),
        Index("ix_notifications_user_updated", "user_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # like | comment | reply | follow | upload
    group_key: Mapped[str] = mapped_column(String(64))
    video_id: Mapped[int | None] = mapped_column(BigInteger)
    comment_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_ids: Mapped[list[int]] = mapped_column(JSON, default=list)  # newest first
    actor_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
