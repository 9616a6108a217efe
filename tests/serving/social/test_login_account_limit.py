"""Logins are limited per account as well as per IP (issue 14): guesses at one password
spread over many addresses are cut off, other accounts are not affected."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from core.config import Settings, get_settings
from platform_services.storage.db import migrate
from serving.app import create_app
from tests.serving.social.conftest import PASSWORD, make_account

V1 = "/api/v1"


@pytest.fixture
def app_settings(settings: Settings, clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("REELRANK_RATE_LIMIT_LOGIN", "100/minute")  # the per-IP limit: loose
    clean_env.setenv("REELRANK_RATE_LIMIT_LOGIN_ACCOUNT", "4/minute")
    get_settings.cache_clear()
    s = get_settings()
    migrate(s.database_url)
    return s


@pytest.fixture
def clients(app_settings: Settings) -> Iterator[list[TestClient]]:
    """Four API processes' worth of apps (the limits live in the shared Redis), each reached
    from its own client address."""
    with ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(app_settings, feed_services=False),
                                              client=(f"198.51.100.{i}", 40000)))
               for i in range(1, 5)]


def _login(client: TestClient, username: str, password: str) -> int:
    return client.post(f"{V1}/auth/token",
                       json={"username": username, "password": password}).status_code


def test_guesses_from_many_addresses_are_cut_off_per_account(clients: list[TestClient]) -> None:
    make_account(clients[0], "ann")  # one login of the 4 per minute
    make_account(clients[0], "bob")
    codes = [_login(c, "ann", "guess") for c in clients]  # each from another address
    assert codes == [401, 401, 401, 429]
    assert _login(clients[1], "ANN", PASSWORD) == 429, "the name compares case-insensitively"
    assert _login(clients[2], "bob", PASSWORD) == 200, "another account is not affected"


def test_unknown_names_are_limited_alike(clients: list[TestClient]) -> None:
    codes = [_login(clients[i % 4], "nobody", "guess") for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
