"""Alembic environment: runs on the connection :mod:`platform_services.storage.db` passes in."""

from __future__ import annotations

from alembic import context

from platform_services import notification_models  # noqa: F401 - issue 15's tables
from platform_services.bus import models as bus_models  # noqa: F401 - registers the tables
from platform_services.media import models as media_models  # noqa: F401
from platform_services.search import models as search_models  # noqa: F401
from platform_services.storage import models  # noqa: F401
from platform_services.storage.db import Base, make_engine
from platform_services.storage.social_models import Comment  # noqa: F401 - its tables too


# The lexical search indexes are dialect-specific DDL of migration 0008 (FTS5 tables on
# SQLite, GIN expression indexes on PostgreSQL), not models: autogenerate leaves them alone.
def _include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    return not (name or "").startswith("search_fts")


config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        transactional_ddl=True,  # db.py runs every migration inside one BEGIN ... COMMIT
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain `alembic -x url=...` use, outside our helpers
    engine = make_engine(context.get_x_argument(as_dictionary=True)["url"])
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
