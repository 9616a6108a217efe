"""A migrated SQLite database under test settings, and an API client with an admin account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import Role, User
from serving.app import create_app

ADMIN = "boss"


@pytest.fixture
def exp_settings(settings: Settings) -> Settings:
    """Test settings with the database migrated."""
    migrate(settings.database_url)
    return settings


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
    """Register ``name`` and log in; the account ``boss`` gets the admin role (in the database,
    before the login, so that the token carries it too)."""
    body = {"username": name, "email": f"{name}@example.com", "password": "correct horse"}
    r = client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    if name == ADMIN:
        with client.app.state.runtime.sessions.begin() as s:
            s.get(User, r.json()["id"]).role = Role.ADMIN
    r = client.post("/api/v1/auth/token", json={"username": name, "password": "correct horse"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
