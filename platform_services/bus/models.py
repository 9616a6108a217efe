"""ORM models of the event backbone: the embedded log, group offsets, the outbox, idempotency."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime


class BusPartition(Base):
    """One partition of a ``db://`` topic; ``next_offset`` is locked by each append."""

    __tablename__ = "bus_partitions"
    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger, default=0)


class BusRecord(Base):
    """The durable append-only log of the ``db://`` bus."""

    __tablename__ = "bus_log"
    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)


class BusOffset(Base):
    """A consumer group's committed offset (the next record to read) per partition."""

    __tablename__ = "bus_offsets"
    group: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    committed: Mapped[int] = mapped_column(BigInteger, default=0)


class BusMember(Base):
    """A live member of a consumer group; partitions are split among fresh heartbeats."""

    __tablename__ = "bus_members"
    group: Mapped[str] = mapped_column(String(200), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    heartbeat_ms: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """An event committed with the state change that caused it, waiting for the relay."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProcessedEvent(Base):
    """Event ids a consumer has applied, written in the same transaction as its effects."""

    __tablename__ = "processed_events"
    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

