"""accounts, refresh tokens, social graph, comments (issue 14)

Profiles and roles on ``users`` (and case-insensitive uniqueness of usernames and emails),
refresh tokens, per-user counters, likes, saves, shares, comments and reports.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types, so later model changes cannot alter this migration.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
PATH = sa.String(2048).with_variant(sa.String(2048, collation="C"), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _fk(column: str, table: str, src: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{table}.id"], name=op.f(f"fk_{src}_{column}_{table}"), ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("display_name", sa.String(64), nullable=True))
        batch.add_column(sa.Column("bio", sa.String(500), server_default="", nullable=False))
        batch.add_column(sa.Column("avatar_url", sa.String(1024), nullable=True))
        batch.add_column(
            sa.Column("verified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column(
            "role", _enum("role", "user", "moderator", "admin"), server_default="user",
            nullable=False,
        ))  # fmt: skip
        batch.add_column(sa.Column("deleted_at", TS, nullable=True))
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")],
                    unique=True)
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_index("ix_blocks_blocked_id", "blocks", ["blocked_id"])
    # The followers / following lists, newest first, a keyset page each.
    op.create_index("ix_follows_followee_created", "follows",
                    ["followee_id", "created_at", "follower_id"])
    op.create_index("ix_follows_follower_created", "follows",
                    ["follower_id", "created_at", "followee_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        _fk("user_id", "users", "refresh_tokens"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])

    op.create_table(
        "user_stats",
        sa.Column("user_id", ID, autoincrement=False, nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False)
          for c in ("followers", "following", "total_likes")),
        _fk("user_id", "users", "user_stats"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_stats")),
    )  # fmt: skip
    for name in ("likes", "saves"):
        op.create_table(
            name,
            sa.Column("user_id", ID, autoincrement=False, nullable=False),
            sa.Column("video_id", ID, autoincrement=False, nullable=False),
            sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
            _fk("user_id", "users", name),
            _fk("video_id", "videos", name),
            sa.PrimaryKeyConstraint("user_id", "video_id", name=op.f(f"pk_{name}")),
        )
    op.create_index("ix_likes_video_id", "likes", ["video_id"])
    op.create_table(
        "shares",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("video_id", ID, autoincrement=False, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        _fk("user_id", "users", "shares"),
        _fk("video_id", "videos", "shares"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shares")),
    )
    op.create_index("ix_shares_video_id", "shares", ["video_id"])

    op.create_table(
        "comments",
        sa.Column("id", ID, nullable=False),
        sa.Column("video_id", ID, autoincrement=False, nullable=False),
        sa.Column("author_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("root_id", sa.BigInteger(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("path", PATH, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("edited_at", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
        _fk("video_id", "videos", "comments"),
        _fk("author_id", "users", "comments"),
        _fk("parent_id", "comments", "comments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    op.create_index("ix_comments_video_threads", "comments", ["video_id", "parent_id", "id"])
    op.create_index("ix_comments_root_path", "comments", ["root_id", "path"])
    op.create_index("ix_comments_author_id", "comments", ["author_id"])

    op.create_table(
        "reports",
        sa.Column("id", ID, nullable=False),
        sa.Column("reporter_id", ID, nullable=False),
        sa.Column("target_type", _enum("target_type", "video", "comment", "user"),
                  nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", _enum("reason", "spam", "harassment", "hate", "violence", "nudity",
                                  "misinformation", "other"), nullable=False),
        sa.Column("details", sa.String(1000), server_default="", nullable=False),
        sa.Column("status", _enum("report_status", "open", "actioned", "dismissed"),
                  server_default="open", nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.BigInteger(), nullable=True),
        _fk("reporter_id", "users", "reports"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("reporter_id", "target_type", "target_id",
                            name="uq_reports_target"),
    )  # fmt: skip
    op.create_index("ix_reports_status_created_at", "reports", ["status", "created_at"])
    op.create_index("ix_reports_target", "reports", ["target_type", "target_id"])
    op.create_index("ix_saves_user_created", "saves", ["user_id", "created_at", "video_id"])


def downgrade() -> None:
    for table in ("reports", "comments", "shares", "saves", "likes", "user_stats",
                  "refresh_tokens"):
        op.drop_table(table)  # drops its indexes too
    op.drop_index("ix_follows_follower_created", table_name="follows")
    op.drop_index("ix_follows_followee_created", table_name="follows")
    op.drop_index("ix_blocks_blocked_id", table_name="blocks")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_index("uq_users_username_lower", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        for column in ("deleted_at", "role", "verified", "avatar_url", "bio", "display_name"):
            batch.drop_column(column)
