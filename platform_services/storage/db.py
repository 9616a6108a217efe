"""The relational database: engine, sessions, transactions and Alembic migrations.

SQLite (the embedded default) and PostgreSQL (production) run the same models and the same
migrations; everything dialect-specific lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, BigInteger, DateTime, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Stable constraint names, so that migrations can drop and alter them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an ``INTEGER PRIMARY KEY`` (the rowid alias), not ``BIGINT``.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, also on SQLite (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table of ours."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3 (SQLAlchemy would pick psycopg2)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


_SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second writer wait
    # instead of failing; SQLite leaves foreign keys off unless asked, per connection.
    cur = dbapi_conn.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for SQLite (file created on demand) or PostgreSQL (psycopg 3)."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs every checkout a round trip, a sixth on a like's five statements.
    # A connection a database restart broke fails its first statement instead; SQLAlchemy
    # then invalidates the whole pool, so only the requests in flight fail (a 503 with
    # Retry-After: serving/errors.py) and ``serving.deps.as_user`` runs its unit once more.
    return create_engine(u, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (handlers build responses from them)."""
    return sessionmaker(engine, expire_on_commit=False)


def upsert_insert(bind: Connection | Session, model: Any) -> Any:
    """The dialect's ``INSERT`` with ``on_conflict_do_nothing/do_update`` (SQLite, PostgreSQL)."""
    from sqlalchemy.dialects import postgresql, sqlite

    name = (bind.get_bind() if isinstance(bind, Session) else bind).dialect.name
    return (postgresql if name == "postgresql" else sqlite).insert(model)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed if the block succeeds, rolled back if it raises."""
    with factory() as session, session.begin():
        yield session


# --- migrations ------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config built in code (no alembic.ini); ``env.py`` uses ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _with_migration_connection(url: str | URL, run: Callable[[Config], None]) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild tables, which foreign keys would cascade into; the
                # pragma only takes effect outside a transaction, so set it first.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            with conn.begin():
                if sqlite:
                    # pysqlite only opens a transaction before DML; make the DDL atomic too.
                    conn.exec_driver_sql("BEGIN")
                run(alembic_config(conn))
                if sqlite and (bad := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"migration left foreign-key violations: {bad[:5]}")
    finally:
        engine.dispose()


def migrate(url: str | URL, revision: str = "head") -> str | None:
    """Upgrade the database at ``url`` to ``revision``; returns the revision reached."""
    _with_migration_connection(url, lambda cfg: command.upgrade(cfg, revision))
    return current_revision(url)


def downgrade(url: str | URL, revision: str) -> str | None:
    """Downgrade to ``revision`` (``base`` drops everything); returns the revision reached."""
    _with_migration_connection(url, lambda cfg: command.downgrade(cfg, revision))
    return current_revision(url)


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at; ``None`` for a database never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
