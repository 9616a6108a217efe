"""An API client on a migrated SQLite database, plus helpers to make users and tokens, and a
client that checks every feed page it gets against the spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.storage.db import migrate
from serving.app import create_app
from serving.feed.schemas import FeedPage


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


def assert_feed_page(body: dict) -> None:
    """``body`` is exactly a :class:`FeedPage` as pydantic would write it: no field missing,
    none extra, every value of its type."""
    assert FeedPage.model_validate(body).model_dump(mode="json", by_alias=True) == body


class FeedClient(TestClient):
    """A test client that checks every 200 of a feed route against :class:`FeedPage`: the feed
    routes write their JSON themselves (``serving/routes/feed.py``), so FastAPI does not."""

    def request(self, method: str, url: httpx.URL | str, *args: Any, **kwargs: Any
                ) -> httpx.Response:
        r = super().request(method, url, *args, **kwargs)
        if r.status_code == 200 and httpx.URL(str(url)).path.startswith("/api/v1/feed/"):
            assert_feed_page(r.json())
        return r
