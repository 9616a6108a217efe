"""uploads, renditions, moderation (issue 16)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
MODERATION = ("pending", "approved", "needs_review", "blocked")


def upgrade() -> None:
    # On SQLite the batch copy of ``videos`` reflects ``users`` (its owner's foreign key), whose
    # case-insensitive unique indexes are expressions SQLAlchemy does not reflect, and it said
    # so on every fresh install; ``users`` is not rebuilt, so they stay as they are.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based",
                                sa.exc.SAWarning)
        with op.batch_alter_table("videos") as batch:
            batch.add_column(sa.Column(
                "moderation",
                sa.Enum(*MODERATION, name="moderation", native_enum=False,
                        create_constraint=True, length=16),
                server_default="approved", nullable=False,
            ))  # fmt: skip
    op.create_table(
        "video_media",
        sa.Column("video_id", ID, nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("location", sa.JSON(), nullable=True),
        sa.Column("music_id", sa.String(64), nullable=True),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("source_key", sa.String(1024), nullable=False),
        sa.Column("upload_expires_at", TS, nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("source_bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(64), nullable=True),
        sa.Column("media_prefix", sa.String(1024), nullable=True),
        sa.Column("probe", sa.JSON(), nullable=True),
        sa.Column("renditions", sa.JSON(), nullable=False),
        sa.Column("failure_reason", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("moderation_reason", sa.String(500), nullable=True),
        sa.Column("moderation_scores", sa.JSON(), nullable=True),
        sa.Column("moderated_by", sa.BigInteger(), nullable=True),
        sa.Column("moderated_at", TS, nullable=True),
        sa.Column("content_embedding", sa.LargeBinary(), nullable=True),
        sa.Column("content_encoder", sa.String(64), nullable=True),
        sa.Column("ready_at", TS, nullable=True),
        sa.Column("item_vector", sa.LargeBinary(), nullable=True),
        sa.Column("item_vector_model", sa.String(128), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"],
            name=op.f("fk_video_media_video_id_videos"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_video_media")),
    )  # fmt: skip
    op.create_index("ix_video_media_checksum", "video_media", ["checksum"])


def downgrade() -> None:
    op.drop_index("ix_video_media_checksum", table_name="video_media")
    op.drop_table("video_media")
    with op.batch_alter_table("videos") as batch:
        batch.drop_constraint(op.f("ck_videos_moderation"), type_="check")
        batch.drop_column("moderation")
