"""``video_stats.updated_at``: serving's catalog reads only the counters that changed

Each API process re-read every row of ``video_stats`` every ``stats_every_s`` to refresh the
counters it shows and ranks exploration by: on the 100k-video bench world that was ~0.3 s of
CPU per process per refresh, most of an idle API's CPU, and it grows with the catalog, not
with the traffic. The counters worker stamps each row it changes; the catalog reads the rows
stamped since its last read (by this index), like it reads ``videos`` by ``updated_at``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Batch mode: SQLite cannot ADD COLUMN with a non-constant default, so the table is
    # copied there; existing rows get the migration's time (the first refresh reads all).
    with op.batch_alter_table("video_stats", recreate="always") as batch:
        batch.add_column(sa.Column("updated_at", TS, server_default=sa.func.now(),
                                   nullable=False))
    op.create_index("ix_video_stats_updated_at", "video_stats", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_video_stats_updated_at", table_name="video_stats")
    with op.batch_alter_table("video_stats") as batch:
        batch.drop_column("updated_at")
