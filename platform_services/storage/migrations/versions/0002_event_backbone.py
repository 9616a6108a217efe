"""event backbone: the db:// log, group offsets and members, outbox, processed ids, counters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
NAME = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "bus_partitions",
        sa.Column("topic", NAME, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_bus_partitions")),
    )
    op.create_table(
        "bus_log",
        sa.Column("topic", NAME, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", NAME, nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name=op.f("pk_bus_log")),
    )
    op.create_table(
        "bus_offsets",
        sa.Column("group", NAME, nullable=False),
        sa.Column("topic", NAME, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("committed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group", "topic", "partition", name=op.f("pk_bus_offsets")),
    )
    op.create_table(
        "bus_members",
        sa.Column("group", NAME, nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group", "member_id", name=op.f("pk_bus_members")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", ID, nullable=False),
        sa.Column("topic", NAME, nullable=False),
        sa.Column("key", NAME, nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
    op.create_table(
        "processed_events",
        sa.Column("consumer", NAME, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("processed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "video_stats",
        sa.Column("video_id", sa.BigInteger(), autoincrement=False, nullable=False),
        *(
            sa.Column(c, sa.BigInteger(), nullable=False)
            for c in ("views", "likes", "comments", "shares", "skips", "reports", "watch_ms")
        ),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_video_stats")),
    )


def downgrade() -> None:
    for table in (
        "video_stats",
        "processed_events",
        "outbox",
        "bus_members",
        "bus_offsets",
        "bus_log",
        "bus_partitions",
    ):
        op.drop_table(table)
