"""A migrated SQLite database under test settings, and an API client with an admin account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from platform_services.storage.db import make_engine, migrate, session_factory
from serving.app import create_app

ADMIN = "boss"


@pytest.fixture
def exp_settings(settings: Settings, clean_env: pytest.MonkeyPatch) -> Settings:
    """Test settings where the account ``boss`` gets admin tokens; database migrated."""
    clean_env.setenv("REELRANK_ADMIN_USERNAMES", f'["{ADMIN}"]')
    get_settings.cache_clear()
    s = get_settings()
    migrate(s.database_url)
    return s


@pytest.fixture
def sessions(exp_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(exp_settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def api(exp_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(exp_settings, feed_services=False)) as c:
        yield c


def login(client: TestClient, name: str) -> dict[str, str]:
    body = {"username": name, "email": f"{name}@example.com", "password": "correct horse"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    r = client.post("/api/v1/auth/token", json={"username": name, "password": "correct horse"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
