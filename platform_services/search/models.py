"""The search documents table (issue 15): one row per searchable video, kept by the
``search`` worker from ``video.processed`` / ``video.deleted`` / ``video.moderated``.

The lexical index over it is dialect-specific and created by migration 0008 only: on SQLite an
FTS5 external-content table ``search_fts_videos`` kept in step by triggers, on PostgreSQL a GIN
index on the weighted ``tsvector`` expression the PostgreSQL backend queries (plus
``search_fts_users`` over ``users`` on both). ``search_embeddings`` holds each document's
MiniLM vector (float16, L2-normalised) for the semantic half of relevance.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime


class SearchVideo(Base):
    __tablename__ = "search_videos"
    __table_args__ = (Index("ix_search_videos_indexed_at", "indexed_at"),)

    video_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(Text, default="")  # space-separated, without '#'
    creator: Mapped[str] = mapped_column(String(200), default="")  # username + display name
    category: Mapped[str | None] = mapped_column(String(32))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SearchEmbedding(Base):
    """A document's vector, kept apart from the document (migration 0010): the lexical
    engines read ``search_videos`` rows by the thousand, and 768 more bytes made each row 3x
    as wide, so the same matches spread over 3x the pages (PostgreSQL, 100k documents: a
    query's p50 12 -> 10 ms, p99 26-33 -> 20 ms without them). Only the semantic index's
    refresh reads vectors."""

    __tablename__ = "search_embeddings"
    __table_args__ = (Index("ix_search_embeddings_indexed_at", "indexed_at"),)

    video_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("search_videos.video_id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
