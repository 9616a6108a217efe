"""search documents and lexical indexes, notifications (issue 15)

SQLite: FTS5 external-content tables over ``search_videos`` and ``users`` kept in step by
triggers (porter stemming for videos, prefix search for users). PostgreSQL: GIN indexes on
the stored ``tsvector`` column ``search_fts_doc`` and the users' ``tsvector`` expression
:mod:`platform_services.search.backends` queries. Alembic's
autogenerate ignores the ``search_fts*`` objects (see ``migrations/env.py``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

# The weighted document platform_services/search/backends.py ranks on PostgreSQL.
PG_VIDEO_DOC = (
    "(setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, tags), 'B') || "
    "setweight(to_tsvector('english'::regconfig, creator), 'B') || "
    "setweight(to_tsvector('english'::regconfig, description), 'C'))"
)
PG_USER_DOC = (
    "to_tsvector('simple'::regconfig, (username::text || ' ' || "
    "coalesce(display_name, '')::text))"
)
_FTS_SQLITE = [
    "CREATE VIRTUAL TABLE search_fts_videos USING fts5(title, description, tags, creator, "
    "content='search_videos', content_rowid='video_id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_fts_videos_ai AFTER INSERT ON search_videos BEGIN "
    "INSERT INTO search_fts_videos(rowid, title, description, tags, creator) VALUES "
    "(new.video_id, new.title, new.description, new.tags, new.creator); END",
    "CREATE TRIGGER search_fts_videos_ad AFTER DELETE ON search_videos BEGIN "
    "INSERT INTO search_fts_videos(search_fts_videos, rowid, title, description, tags, "
    "creator) VALUES ('delete', old.video_id, old.title, old.description, old.tags, "
    "old.creator); END",
    "CREATE TRIGGER search_fts_videos_au AFTER UPDATE ON search_videos BEGIN "
    "INSERT INTO search_fts_videos(search_fts_videos, rowid, title, description, tags, "
    "creator) VALUES ('delete', old.video_id, old.title, old.description, old.tags, "
    "old.creator); INSERT INTO search_fts_videos(rowid, title, description, tags, creator) "
    "VALUES (new.video_id, new.title, new.description, new.tags, new.creator); END",
    "CREATE VIRTUAL TABLE search_fts_users USING fts5(username, display_name, "
    "content='users', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_fts_users_ai AFTER INSERT ON users BEGIN "
    "INSERT INTO search_fts_users(rowid, username, display_name) VALUES "
    "(new.id, new.username, new.display_name); END",
    "CREATE TRIGGER search_fts_users_ad AFTER DELETE ON users BEGIN "
    "INSERT INTO search_fts_users(search_fts_users, rowid, username, display_name) VALUES "
    "('delete', old.id, old.username, old.display_name); END",
    "CREATE TRIGGER search_fts_users_au AFTER UPDATE OF username, display_name ON users BEGIN "
    "INSERT INTO search_fts_users(search_fts_users, rowid, username, display_name) VALUES "
    "('delete', old.id, old.username, old.display_name); "
    "INSERT INTO search_fts_users(rowid, username, display_name) VALUES "
    "(new.id, new.username, new.display_name); END",
    "INSERT INTO search_fts_users(search_fts_users) VALUES ('rebuild')",
]
_FTS_PG = [
    # Stored, so ranking reads the vector instead of re-parsing every matching document.
    f"ALTER TABLE search_videos ADD COLUMN search_fts_doc tsvector GENERATED ALWAYS AS "
    f"({PG_VIDEO_DOC}) STORED",
    "CREATE INDEX search_fts_videos ON search_videos USING gin (search_fts_doc)",
    f"CREATE INDEX search_fts_users ON users USING gin (({PG_USER_DOC}))",
]


def upgrade() -> None:
    op.create_table(
        "search_videos",
        sa.Column("video_id", ID, nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("creator", sa.String(200), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("indexed_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["video_id"], ["videos.id"],
                                name=op.f("fk_search_videos_video_id_videos"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_search_videos")),
    )
    op.create_index("ix_search_videos_indexed_at", "search_videos", ["indexed_at"])
    op.create_table(
        "notifications",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("group_key", sa.String(64), nullable=False),
        sa.Column("video_id", sa.BigInteger(), nullable=True),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_ids", sa.JSON(), nullable=False),
        sa.Column("actor_count", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("read_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_notifications_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("uq_notifications_unread_group", "notifications", ["user_id", "group_key"],
                    unique=True, sqlite_where=sa.text("read_at IS NULL"),
                    postgresql_where=sa.text("read_at IS NULL"))
    op.create_index("ix_notifications_user_updated", "notifications",
                    ["user_id", "updated_at", "id"])
    for sql in _FTS_SQLITE if op.get_bind().dialect.name == "sqlite" else _FTS_PG:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("videos_ai", "videos_ad", "videos_au", "users_ai", "users_ad",
                        "users_au"):
            op.execute(f"DROP TRIGGER IF EXISTS search_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS search_fts_videos")
        op.execute("DROP TABLE IF EXISTS search_fts_users")
    else:
        op.execute("DROP INDEX IF EXISTS search_fts_users")
    op.drop_index("ix_notifications_user_updated", table_name="notifications")
    op.drop_index("uq_notifications_unread_group", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_search_videos_indexed_at", table_name="search_videos")
    op.drop_table("search_videos")
