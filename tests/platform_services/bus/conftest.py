"""The bus backends the contract suite runs against, each with a fresh state store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.config import load_settings
from platform_services.runtime import Runtime
from platform_services.storage.db import migrate

BACKENDS = ["db-sqlite", "db-postgres", "kafka"]


@pytest.fixture(params=BACKENDS)
def worker_env(request: pytest.FixtureRequest, tmp_path) -> dict[str, str]:  # noqa: ANN001
    """REELRANK_* settings of one backend (also handed to worker subprocesses)."""
    sqlite = f"sqlite:///{tmp_path}/state.db"
    if request.param == "db-sqlite":
        env = {"database_url": sqlite, "event_bus_url": "db://"}
    elif request.param == "db-postgres":
        env = {"database_url": request.getfixturevalue("postgres_db"), "event_bus_url": "db://"}
    else:
        bootstrap = request.getfixturevalue("kafka_broker")
        env = {"database_url": sqlite, "event_bus_url": f"kafka://{bootstrap}"}
    env |= {"env": "test", "jwt_secret": "t" * 32, "bus_session_timeout_ms": "6000"}
    return {f"REELRANK_{k.upper()}": v for k, v in env.items()}


@pytest.fixture
async def rt(worker_env: dict[str, str]) -> AsyncIterator[Runtime]:
    """A migrated state store and the bus, closed in the test's own event loop."""
    settings = load_settings(
        **{k.removeprefix("REELRANK_").lower(): v for k, v in worker_env.items()}
    )
    migrate(settings.database_url)
    runtime = Runtime.from_settings(settings)
    yield runtime
    await runtime.close()
