"""One contract for the relational database, run on every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import features.stream_state  # noqa: F401 - its tables are migrated here too: compare them all
from platform_services.storage.db import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    migrate,
    session_factory,
    transaction,
)
from platform_services.storage.models import Follow, User, Video, VideoStatus, Visibility


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test; PostgreSQL's server is shared by the session."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/dir/contract.db"  # parent dirs created on demand
    return request.getfixturevalue("postgres_db")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def _user(name: str) -> User:
    return User(username=name, email=f"{name}@example.com", password_hash="h", region="eu")


def _count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_migrate_reaches_head_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    head = head_revision()
    assert head is not None
    assert migrate(db_url) == head
    assert migrate(db_url) == head
    assert current_revision(db_url) == head


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    migrate(db_url)
    assert downgrade(db_url, "base") is None
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    assert migrate(db_url) == head_revision()


def test_models_match_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to do: every model change came with its migration."""
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            command.check(alembic_config(conn))
    finally:
        engine.dispose()


def test_insert_and_query_users_videos_follows(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        ana, bo = _user("ana"), _user("bo")
        s.add_all([ana, bo])
        s.flush()
        s.add(Video(owner=ana, title="cat", blob_key="videos/1/source.mp4"))
        s.add(Follow(follower_id=bo.id, followee_id=ana.id))
    assert isinstance(ana.id, int) and ana.id != bo.id

    with sessions() as s:
        video = s.scalars(select(Video)).one()
        assert video.owner.username == "ana"
        assert video.status is VideoStatus.UPLOADED and video.visibility is Visibility.PUBLIC
        assert video.created_at.utcoffset() == timedelta(0)  # tz-aware UTC on both backends
        followers = s.scalars(
            select(User.username).join(Follow, Follow.follower_id == User.id)
            .where(Follow.followee_id == ana.id)
        ).all()  # fmt: skip
        assert followers == ["bo"]
        video.status = VideoStatus.READY
        s.commit()
        assert video.updated_at >= video.created_at


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda s, u: s.add(Video(owner_id=u.id + 999, title="x")), id="foreign-key"),
        pytest.param(lambda s, u: s.add(_user(u.username)), id="unique-username"),
        pytest.param(
            lambda s, u: s.add(User(username="z", email=u.email, password_hash="h")),
            id="unique-email",
        ),
        pytest.param(lambda s, u: s.add(Follow(follower_id=u.id, followee_id=u.id)), id="self"),
        pytest.param(
            lambda s, u: s.execute(
                text(
                    "INSERT INTO videos (owner_id, title, visibility, status) "
                    "VALUES (:o, 't', 'public', 'bogus')"
                ),
                {"o": u.id},
            ),
            id="enum-check",
        ),  # fmt: skip
    ],
)
def test_constraints_are_enforced(sessions: sessionmaker[Session], bad) -> None:  # noqa: ANN001
    with transaction(sessions) as s:
        user = _user("ana")
        s.add(user)
    with pytest.raises(IntegrityError), transaction(sessions) as s:
        bad(s, user)
        s.flush()


def test_deleting_a_user_cascades(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        ana, bo = _user("ana"), _user("bo")
        s.add_all([ana, bo])
        s.flush()
        s.add_all([Video(owner=ana, title="t"), Follow(follower_id=bo.id, followee_id=ana.id)])
    with transaction(sessions) as s:
        s.execute(text("DELETE FROM users WHERE id = :id"), {"id": ana.id})
    assert (_count(sessions, Video), _count(sessions, Follow), _count(sessions, User)) == (0, 0, 1)


def test_failed_transaction_leaves_nothing_written(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="boom"), transaction(sessions) as s:
        s.add(_user("ghost"))
        s.flush()  # written inside the transaction...
        raise RuntimeError("boom")
    with pytest.raises(IntegrityError), transaction(sessions) as s:
        s.add(_user("first"))
        s.flush()
        s.add(_user("first"))  # ...and a constraint failure undoes the earlier rows too
        s.flush()
    assert _count(sessions, User) == 0
