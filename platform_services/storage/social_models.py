"""ORM models of accounts and the social graph (issue 14): refresh tokens, per-user counters,
likes, saves, shares, comments and reports. Follows and blocks live in :mod:`.models`.

A like, save or follow is a row keyed by (user, target): the primary key is what makes the
endpoints idempotent, and the counters worker counts only the rows' events, so counts cannot
drift. Comments are an adjacency list (``parent_id``) plus a materialized path, chosen by
``benchmarks/comments.py`` (see ``benchmarks/results/comments.md``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from platform_services.storage.db import Base, BigIntId, UTCDateTime
from platform_services.storage.models import _created_at, _str_enum

# Byte order, not the locale's: a path's prefix range must hold on every PostgreSQL install.
PATH_TYPE = String(2048).with_variant(String(2048, collation="C"), "postgresql")


class RefreshToken(Base):
    """One refresh token, stored as its SHA-256 (the token itself is 256 random bits).

    Tokens of one login form a ``family``: each refresh marks the presented token ``used_at``
    and issues its successor. Presenting a used token again means it leaked, so the whole
    family is revoked (the thief's and the owner's sessions both end)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family", "family"),
        Index("ix_refresh_tokens_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    family: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserStats(Base):
    """Per-user counters kept by the ``counters`` worker (exactly once per event)."""

    __tablename__ = "user_stats"
    user_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False,
    )
    followers: Mapped[int] = mapped_column(BigInteger, default=0)
    following: Mapped[int] = mapped_column(BigInteger, default=0)
    total_likes: Mapped[int] = mapped_column(BigInteger, default=0)


def _user_fk() -> Mapped[int]:
    return mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False,
    )


def _video_fk(primary_key: bool = True) -> Mapped[int]:
    return mapped_column(
        BigIntId, ForeignKey("videos.id", ondelete="CASCADE"), primary_key=primary_key,
        autoincrement=False,
    )


class Like(Base):
    __tablename__ = "likes"
    __table_args__ = (Index("ix_likes_video_id", "video_id"),)
    user_id: Mapped[int] = _user_fk()
    video_id: Mapped[int] = _video_fk()
    created_at: Mapped[datetime] = _created_at()


class Save(Base):
    """A video bookmarked by a user (private to them)."""

    __tablename__ = "saves"
    __table_args__ = (Index("ix_saves_user_created", "user_id", "created_at", "video_id"),)
    user_id: Mapped[int] = _user_fk()
    video_id: Mapped[int] = _video_fk()
    created_at: Mapped[datetime] = _created_at()


class Share(Base):
    """One share of a video (not a toggle: each share is a row and an event)."""

    __tablename__ = "shares"
    __table_args__ = (Index("ix_shares_video_id", "video_id"),)
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    video_id: Mapped[int] = _video_fk(primary_key=False)
    channel: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = _created_at()


class Comment(Base):
    """A comment or a reply. ``path`` is the thread-relative materialized path: one segment
    per ancestor and the comment itself (see :mod:`platform_services.comments`), so a subtree
    in display order is one index range ``(root_id, path)``. A deleted comment keeps its row
    (its replies still hang from it) with ``deleted_at`` set and its body emptied."""

    __tablename__ = "comments"
    __table_args__ = (
        Index("ix_comments_video_threads", "video_id", "parent_id", "id"),
        Index("ix_comments_root_path", "root_id", "path"),
        Index("ix_comments_author_id", "author_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    video_id: Mapped[int] = _video_fk(primary_key=False)
    author_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("users.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("comments.id", ondelete="CASCADE")
    )
    root_id: Mapped[int | None] = mapped_column(BigInteger)  # its own id for a thread's root
    depth: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(PATH_TYPE, default="")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReportTarget(StrEnum):
    VIDEO = "video"
    COMMENT = "comment"
    USER = "user"


class ReportReason(StrEnum):
    SPAM = "spam"
    HARASSMENT = "harassment"
    HATE = "hate"
    VIOLENCE = "violence"
    NUDITY = "nudity"
    MISINFORMATION = "misinformation"
    OTHER = "other"


class ReportStatus(StrEnum):
    OPEN = "open"
    ACTIONED = "actioned"
    DISMISSED = "dismissed"


class Report(Base):
    """A user's report of a video, comment or user: the moderation queue reads the open ones
    oldest first (``ix_reports_status_created_at``). One report per reporter and target."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("reporter_id", "target_type", "target_id", name="uq_reports_target"),
        Index("ix_reports_status_created_at", "status", "created_at"),
        Index("ix_reports_target", "target_type", "target_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    reporter_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE")
    )
    target_type: Mapped[ReportTarget] = mapped_column(_str_enum(ReportTarget, "target_type"))
    target_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[ReportReason] = mapped_column(_str_enum(ReportReason, "reason"))
    details: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    status: Mapped[ReportStatus] = mapped_column(
        _str_enum(ReportStatus, "report_status"), default=ReportStatus.OPEN,
        server_default=ReportStatus.OPEN.value,
    )
    created_at: Mapped[datetime] = _created_at()
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[int | None] = mapped_column(BigInteger)
