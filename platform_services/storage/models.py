"""ORM models of the platform's core tables (users, videos, follows, blocks, video counters).

Enums are stored as short strings with a CHECK constraint rather than native PostgreSQL enum
types: the same DDL works on SQLite, and adding a value never needs ``ALTER TYPE``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime


class Visibility(StrEnum):
    PUBLIC = "public"
    FOLLOWERS = "followers"
    PRIVATE = "private"


class Role(StrEnum):
    """What an account may do; carried in its access token as the ``role`` claim."""

    USER = "user"
    MODERATOR = "moderator"
    ADMIN = "admin"


class VideoStatus(StrEnum):
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    REMOVED = "removed"


class Moderation(StrEnum):
    """A video's moderation verdict; only ``approved`` videos reach feeds, search and the index."""

    PENDING = "pending"
    APPROVED = "approved"
    NEEDS_REVIEW = "needs_review"
    BLOCKED = "blocked"


def _str_enum(cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, server_default=func.now())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # ``Alice`` and ``alice`` are one account (usernames and emails are ASCII-checked).
        Index("uq_users_username_lower", text("lower(username)"), unique=True),
        Index("uq_users_email_lower", text("lower(email)"), unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created_at()
    # Profile (issue 14).
    display_name: Mapped[str | None] = mapped_column(String(64))
    bio: Mapped[str] = mapped_column(String(500), default="", server_default="")
    avatar_url: Mapped[str | None] = mapped_column(String(1024))
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    role: Mapped[Role] = mapped_column(
        _str_enum(Role, "role"), default=Role.USER, server_default=Role.USER.value
    )
    # Set by account deletion (``platform_services.accounts``): the row stays as a tombstone
    # with its personal data scrubbed, so the videos it owned can stay as ``removed`` rows.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    videos: Mapped[list[Video]] = relationship(back_populates="owner", passive_deletes=True)


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = (
        Index("ix_videos_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_videos_status_created_at", "status", "created_at"),
        Index("ix_videos_updated_at", "updated_at"),  # serving's catalog refresh reads by it
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    owner_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    visibility: Mapped[Visibility] = mapped_column(
        _str_enum(Visibility, "visibility"), default=Visibility.PUBLIC
    )
    status: Mapped[VideoStatus] = mapped_column(
        _str_enum(VideoStatus, "status"), default=VideoStatus.UPLOADED
    )
    duration_ms: Mapped[int | None] = mapped_column(Integer)  # known once transcoded
    category: Mapped[str | None] = mapped_column(String(32))  # topic, for trending and topic mix
    blob_key: Mapped[str | None] = mapped_column(String(1024))
    moderation: Mapped[Moderation] = mapped_column(
        _str_enum(Moderation, "moderation"), default=Moderation.APPROVED,
        server_default=Moderation.APPROVED.value,
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    owner: Mapped[User] = relationship(back_populates="videos")


class Follow(Base):
    __tablename__ = "follows"
    __table_args__ = (
        CheckConstraint("follower_id <> followee_id", name="no_self_follow"),
        Index("ix_follows_followee_id", "followee_id"),
        # Followers / following lists, newest first (issue 14).
        Index("ix_follows_followee_created", "followee_id", "created_at", "follower_id"),
        Index("ix_follows_follower_created", "follower_id", "created_at", "followee_id"),
    )

    follower_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    followee_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = _created_at()


class Block(Base):
    """``blocker_id`` never sees ``blocked_id``'s videos in any feed."""

    __tablename__ = "blocks"
    __table_args__ = (
        CheckConstraint("blocker_id <> blocked_id", name="no_self_block"),
        Index("ix_blocks_blocked_id", "blocked_id"),  # who blocked me (feeds hide them too)
    )

    blocker_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = _created_at()


class VideoStats(Base):
    """Per-video engagement counters kept by the ``counters`` worker, which stamps
    ``updated_at`` on each row it changes (serving's catalog reads only those)."""

    __tablename__ = "video_stats"
    __table_args__ = (Index("ix_video_stats_updated_at", "updated_at"),)
    video_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    views: Mapped[int] = mapped_column(BigInteger, default=0)
    likes: Mapped[int] = mapped_column(BigInteger, default=0)
    comments: Mapped[int] = mapped_column(BigInteger, default=0)
    shares: Mapped[int] = mapped_column(BigInteger, default=0)
    skips: Mapped[int] = mapped_column(BigInteger, default=0)
    reports: Mapped[int] = mapped_column(BigInteger, default=0)
    watch_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
