"""The bus backends the contract suite runs against, each with a fresh state store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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
        env = {"database_url": sqlite, "event_bus_url": f"kafka://{request.getfixturevalue('kafka_broker')}"}
    env |= {"env": "test", "jwt_secret": "test-secret", "bus_session_timeout_ms": "6000"}
    return {f"REELRANK_{k.upper()}": v for k, v in env.items()}


@pytest.fixture
def rt(worker_env: dict[str, str]) -> Iterator[Runtime]:
    settings = load_settings(**{k.removeprefix("REELRANK_").lower(): v for k, v in worker_env.items()})
    migrate(settings.database_url)
    runtime = Runtime.from_settings(settings)
    yield runtime
    asyncio.run(runtime.close())
