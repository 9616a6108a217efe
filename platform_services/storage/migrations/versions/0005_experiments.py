"""experiments, variants, the exposure and interaction logs, per-user metrics (issue 13)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
# The per-user metrics (experiments.metrics.PER_USER), as written in this revision.
METRICS = ("watch_time_per_user", "completion_rate", "likes_per_session", "shares_per_session",
           "follows_per_session", "return_d1", "topic_diversity", "report_rate")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("hypothesis", sa.Text(), nullable=False),
        sa.Column("layer", sa.String(64), nullable=False),
        sa.Column("traffic_pct", sa.Float(), nullable=False),
        sa.Column("holdout_pct", sa.Float(), nullable=False),
        sa.Column("population", sa.JSON(), nullable=False),
        sa.Column("primary_metric", sa.String(64), nullable=False),
        sa.Column("secondary_metrics", sa.JSON(), nullable=False),
        sa.Column("guardrail_metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("bucket_lo", sa.Integer(), nullable=True),
        sa.Column("bucket_hi", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("stopped_at", TS, nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'running', 'stopped')",
                           name=op.f("ck_experiments_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("name", name=op.f("uq_experiments_name")),
    )
    op.create_index("ix_experiments_status_layer", "experiments", ["status", "layer"])
    op.create_table(
        "experiment_variants",
        sa.Column("experiment_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("weight_pct", sa.Float(), nullable=False),
        sa.Column("ranker_alias", sa.String(64), nullable=True),
        sa.Column("retrieval_alias", sa.String(64), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE",
                                name=op.f("fk_experiment_variants_experiment_id_experiments")),
        sa.PrimaryKeyConstraint("experiment_id", "name", name=op.f("pk_experiment_variants")),
    )
    op.create_table(
        "experiment_exposures",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("experiment_id", sa.BigInteger(), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("first_position", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("degraded", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_experiment_exposures_experiment_id_experiments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_exposures")),
        sa.UniqueConstraint("event_id", name=op.f("uq_experiment_exposures_event_id")),
    )
    op.create_index("ix_experiment_exposures_experiment_id_user_id", "experiment_exposures",
                    ["experiment_id", "user_id", "variant", "occurred_at"])
    op.create_index("ix_experiment_exposures_experiment_id_occurred_at", "experiment_exposures",
                    ["experiment_id", "occurred_at"])
    op.create_index("ix_experiment_exposures_latency", "experiment_exposures",
                    ["experiment_id", "variant", "latency_ms"])
    op.create_index("ix_experiment_exposures_degraded", "experiment_exposures",
                    ["experiment_id", "variant"], sqlite_where=sa.text("degraded != ''"),
                    postgresql_where=sa.text("degraded != ''"))
    op.create_table(
        "interaction_log",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("video_id", sa.BigInteger(), nullable=True),
        sa.Column("author_id", sa.BigInteger(), nullable=True),
        sa.Column("watch_ms", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interaction_log")),
        sa.UniqueConstraint("event_id", name=op.f("uq_interaction_log_event_id")),
    )
    op.create_index("ix_interaction_log_user_id_occurred_at", "interaction_log",
                    ["user_id", "occurred_at"])
    op.create_index("ix_interaction_log_occurred_at", "interaction_log", ["occurred_at"])
    op.create_table(
        "experiment_user_metrics",
        sa.Column("experiment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("t0_ms", sa.BigInteger(), nullable=False),
        sa.Column("n_exposures", sa.Integer(), nullable=False),
        *(sa.Column(f"{period}_{metric}", sa.Float(), nullable=True)
          for period in ("post", "pre") for metric in METRICS),
        sa.Column("daily_watch", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_experiment_user_metrics_experiment_id_experiments")),
        sa.PrimaryKeyConstraint("experiment_id", "user_id",
                                name=op.f("pk_experiment_user_metrics")),
    )
    op.create_index("ix_experiment_user_metrics_user_id", "experiment_user_metrics",
                    ["user_id"])


def downgrade() -> None:
    for table in ("experiment_user_metrics", "interaction_log", "experiment_exposures",
                  "experiment_variants", "experiments"):
        op.drop_table(table)
