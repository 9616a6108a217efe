"""ORM models of the experiments' tables: definitions, variants, the exposure log, the
interaction log and the per-user metrics the analysis reads (migration ``0005_experiments``).

Definitions and variants are written by ``reelrank experiment`` and the admin API; the two
logs only by the ``exposures`` worker (:mod:`experiments.exposures`), one row per event
(``event_id`` unique, so a redelivered event can never count twice). Nothing deletes log rows:
stopping an experiment changes its status only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from platform_services.storage.db import Base, BigIntId, UTCDateTime


class Status(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Experiment(Base):
    """One A/B test. ``bucket_lo``/``bucket_hi`` are its slice of the layer's 10,000 buckets,
    allocated when it starts (so two running experiments of one layer never share a user)."""

    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'running', 'stopped')", name="status"),
        Index("ix_experiments_status_layer", "status", "layer"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    hypothesis: Mapped[str] = mapped_column(Text, default="")
    layer: Mapped[str] = mapped_column(String(64), default="default")
    traffic_pct: Mapped[float] = mapped_column(Float, default=100.0)
    holdout_pct: Mapped[float] = mapped_column(Float, default=0.0)
    population: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    primary_metric: Mapped[str] = mapped_column(String(64))
    secondary_metrics: Mapped[list[str]] = mapped_column(JSON, default=list)
    guardrail_metrics: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=Status.DRAFT.value)
    salt: Mapped[str] = mapped_column(String(32))
    bucket_lo: Mapped[int | None] = mapped_column(Integer)
    bucket_hi: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))

    variants: Mapped[list[Variant]] = relationship(
        back_populates="experiment", order_by="Variant.position", cascade="all, delete-orphan",
        lazy="selectin")


class Variant(Base):
    """An arm: its share of the experiment's traffic and what it changes in the feed
    (``params``: ``quotas``, ``explore_slots``, ``score_weights``; absent = production)."""

    __tablename__ = "experiment_variants"

    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    weight_pct: Mapped[float] = mapped_column(Float)
    ranker_alias: Mapped[str | None] = mapped_column(String(64))
    retrieval_alias: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    experiment: Mapped[Experiment] = relationship(back_populates="variants")


class Exposure(Base):
    """One page a variant served (from an ``experiment.exposure`` event)."""

    __tablename__ = "experiment_exposures"
    __table_args__ = (
        # Covering the analysis's per-user summary (first exposure, arms, pages) and the
        # guardrails' counts and top latencies, so none of them reads the table's rows.
        Index("ix_experiment_exposures_experiment_id_user_id", "experiment_id", "user_id",
              "variant", "occurred_at"),
        Index("ix_experiment_exposures_experiment_id_occurred_at", "experiment_id",
              "occurred_at"),
        Index("ix_experiment_exposures_latency", "experiment_id", "variant", "latency_ms"),
        Index("ix_experiment_exposures_degraded", "experiment_id", "variant",
              sqlite_where=text("degraded != ''"), postgresql_where=text("degraded != ''")),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    experiment_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("experiments.id"))
    variant: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    n_items: Mapped[int] = mapped_column(Integer)
    first_position: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    degraded: Mapped[str] = mapped_column(String(200), default="")


class Interaction(Base):
    """One ``user.interaction`` event: the outcomes every experiment metric is computed from
    (and, before a user's first exposure, the pre-period CUPED adjusts with)."""

    __tablename__ = "interaction_log"
    __table_args__ = (
        Index("ix_interaction_log_user_id_occurred_at", "user_id", "occurred_at"),
        Index("ix_interaction_log_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(16))
    video_id: Mapped[int | None] = mapped_column(BigInteger)
    author_id: Mapped[int | None] = mapped_column(BigInteger)
    watch_ms: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserMetrics(Base):
    """One exposed user's metrics in one experiment, kept by the ``exposures`` worker in the
    transaction that logs their events (recomputed from the user's log rows, so a redelivered
    event changes nothing): what the analysis reads instead of every log row.

    ``t0_ms`` (first exposure) and ``n_exposures`` are the stamp the analysis checks against the
    exposure log; ``post_*`` count from the first exposure to the stop (or the newest event),
    ``pre_*`` over the pre-period (the CUPED covariates), ``daily_watch`` is watch minutes per
    day since the start (the cumulative-lift looks). See :mod:`experiments.aggregates`."""

    __tablename__ = "experiment_user_metrics"
    __table_args__ = (Index("ix_experiment_user_metrics_user_id", "user_id"),)

    experiment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("experiments.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    t0_ms: Mapped[int] = mapped_column(BigInteger)
    n_exposures: Mapped[int] = mapped_column(Integer)
    post_watch_time_per_user: Mapped[float | None] = mapped_column(Float)
    post_completion_rate: Mapped[float | None] = mapped_column(Float)
    post_likes_per_session: Mapped[float | None] = mapped_column(Float)
    post_shares_per_session: Mapped[float | None] = mapped_column(Float)
    post_follows_per_session: Mapped[float | None] = mapped_column(Float)
    post_return_d1: Mapped[float | None] = mapped_column(Float)
    post_topic_diversity: Mapped[float | None] = mapped_column(Float)
    post_report_rate: Mapped[float | None] = mapped_column(Float)
    pre_watch_time_per_user: Mapped[float | None] = mapped_column(Float)
    pre_completion_rate: Mapped[float | None] = mapped_column(Float)
    pre_likes_per_session: Mapped[float | None] = mapped_column(Float)
    pre_shares_per_session: Mapped[float | None] = mapped_column(Float)
    pre_follows_per_session: Mapped[float | None] = mapped_column(Float)
    pre_return_d1: Mapped[float | None] = mapped_column(Float)
    pre_topic_diversity: Mapped[float | None] = mapped_column(Float)
    pre_report_rate: Mapped[float | None] = mapped_column(Float)
    daily_watch: Mapped[list[float]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
