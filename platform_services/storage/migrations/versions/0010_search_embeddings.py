"""search: the documents' vectors in their own table (issue 15)

``search_videos.embedding`` (768 bytes of float16 per row) made the rows the lexical engines
scan 3x as wide; only the semantic index's refresh reads vectors. They move to
``search_embeddings`` (one row per document, deleted with it), refreshed by ``indexed_at``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "search_embeddings",
        sa.Column("video_id", ID, nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("indexed_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["search_videos.video_id"],
                                name=op.f("fk_search_embeddings_video_id_search_videos"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_search_embeddings")),
    )
    op.create_index("ix_search_embeddings_indexed_at", "search_embeddings", ["indexed_at"])
    op.execute("INSERT INTO search_embeddings (video_id, embedding, indexed_at) "
               "SELECT video_id, embedding, indexed_at FROM search_videos "
               "WHERE embedding IS NOT NULL")
    # Plain ALTER (SQLite >= 3.35 and PostgreSQL): a batch copy of the table would drop the
    # FTS5 triggers of migration 0008.
    op.execute("ALTER TABLE search_videos DROP COLUMN embedding")


def downgrade() -> None:
    op.execute("ALTER TABLE search_videos ADD COLUMN embedding BLOB" if
               op.get_bind().dialect.name == "sqlite" else
               "ALTER TABLE search_videos ADD COLUMN embedding bytea")
    op.execute("UPDATE search_videos SET embedding = (SELECT e.embedding FROM search_embeddings e "
               "WHERE e.video_id = search_videos.video_id)")
    op.drop_index("ix_search_embeddings_indexed_at", table_name="search_embeddings")
    op.drop_table("search_embeddings")
