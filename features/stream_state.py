"""The stream job's state: per-minute video counts and each user's recent events.

Both are written in the worker's transaction together with the processed event ids, so a
redelivered event changes nothing; the values pushed to the online store are recomputed from
this state (absolute values, never increments), so pushing them twice is harmless too.
Created by migration 0004.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from platform_services.storage.db import Base, UTCDateTime


class VideoMinute(Base):
    """Views and likes (likes minus unlikes) of one video in one epoch minute."""

    __tablename__ = "feature_video_minutes"
    video_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    views: Mapped[int] = mapped_column(Integer, default=0)
    likes: Mapped[int] = mapped_column(Integer, default=0)


class UserRecent(Base):
    """A user's newest events (capped), JSON ``[[ts_ms, video_id, action, topic], ...]``."""

    __tablename__ = "feature_user_recent"
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    events: Mapped[str] = mapped_column(Text, default="[]")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
