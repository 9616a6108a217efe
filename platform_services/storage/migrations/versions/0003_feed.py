"""feed: videos.category, an index on videos.updated_at, blocks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("category", sa.String(32), nullable=True))
    op.create_index("ix_videos_updated_at", "videos", ["updated_at"])
    op.create_table(
        "blocks",
        sa.Column("blocker_id", ID, nullable=False),
        sa.Column("blocked_id", ID, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("blocker_id <> blocked_id", name=op.f("ck_blocks_no_self_block")),
        sa.ForeignKeyConstraint(
            ["blocker_id"], ["users.id"],
            name=op.f("fk_blocks_blocker_id_users"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blocked_id"], ["users.id"],
            name=op.f("fk_blocks_blocked_id_users"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id", name=op.f("pk_blocks")),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("blocks")
    op.drop_index("ix_videos_updated_at", table_name="videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("category")
