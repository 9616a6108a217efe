"""An API client on a migrated SQLite database, plus helpers to make users and tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.storage.db import migrate
from serving.app import create_app


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    migrate(settings.database_url)
    with TestClient(create_app(settings, feed_services=False)) as c:
        yield c


def signup(client: TestClient, name: str) -> dict[str, str]:
    """Register ``name`` and return its Authorization header."""
    body = {"username": name, "email": f"{name}@example.com", "password": "correct horse"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    r = client.post("/api/v1/auth/token", json={"username": name, "password": "correct horse"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
