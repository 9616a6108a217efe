"""Auth, input validation, the events endpoint and local media URLs, through the real app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.config import Settings
from core.events import decode
from platform_services.auth import issue_token
from platform_services.bus.models import OutboxRow
from platform_services.media.delivery import PlaylistSigner
from platform_services.storage.blobs import open_blob_store
from platform_services.storage.db import migrate
from platform_services.storage.models import Video, VideoStatus
from serving.app import create_app
from serving.cli import serve_api
from serving.feed.render import MediaUrls
from serving.launch import worker_app
from tests.serving.conftest import signup


def test_register_login_and_me(client: TestClient) -> None:
    headers = signup(client, "ana")
    me = client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200 and me.json()["username"] == "ana"
    dup = {"username": "ana", "email": "other@example.com", "password": "longenough"}
    assert client.post("/api/v1/auth/register", json=dup).status_code == 409
    bad = client.post("/api/v1/auth/token", json={"username": "ana", "password": "nope"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"


def test_tokens_are_checked(client: TestClient, settings: Settings) -> None:
    signup(client, "ben")
    assert client.get("/api/v1/users/me").status_code == 401
    for token in ("garbage", issue_token(settings, 1, ttl_s=-10)):
        r = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "invalid token" in r.json()["error"]["message"]
    forged = settings.model_copy(
        update={
            "jwt_secret": settings.signing_secret.__class__("another-secret-that-is-32-bytes-long")
        }
    )
    r = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {issue_token(forged, 1)}"}
    )
    assert r.status_code == 401


def test_validation_errors_name_the_field(client: TestClient) -> None:
    r = client.post("/api/v1/auth/register", json={"username": "x", "email": "nope"})
    assert r.status_code == 422
    fields = {f["field"] for f in r.json()["error"]["fields"]}
    assert {"username", "email", "password"} <= fields
    r = client.post(
        "/api/v1/auth/register", content=b"{broken", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "error" in r.json()


def test_events_go_to_the_outbox_atomically(client: TestClient, settings: Settings) -> None:
    headers = signup(client, "cyd")
    sessions = client.app.state.runtime.sessions
    with sessions.begin() as s:
        s.add(Video(id=5, owner_id=1, title="v", status=VideoStatus.READY, duration_ms=15_000))
    batch = {"events": [
        {"action": "watch", "video_id": 5, "watch_ms": 3000, "position": 0},
        {"action": "share", "video_id": 5},
    ]}  # fmt: skip
    r = client.post("/api/v1/events", json=batch, headers=headers)
    assert r.status_code == 202 and r.json() == {"accepted": 2}
    with sessions() as s:
        rows = list(s.scalars(select(OutboxRow)))
    events = [decode(row.value) for row in rows]
    assert [e.action for e in events] == ["watch", "share"]
    assert {e.user_id for e in events} == {1}, "the user comes from the token"

    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad = {"events": [{"action": "view", "video_id": 5},
                      {"action": "view", "video_id": 5, "occurred_at": future}]}
    r = client.post("/api/v1/events", json=bad, headers=headers)
    assert r.status_code == 422
    assert {f["field"] for f in r.json()["error"]["fields"]} == {"events.1.occurred_at"}
    r = client.post("/api/v1/events", json={"events": [{"action": "view"}]}, headers=headers)
    assert r.status_code == 422, "a view needs a video"
    for bad_event, field in [
        ({"action": "like", "video_id": 5}, "action"),  # stateful: only via /videos/5/like
        ({"action": "view", "video_id": 999_999}, "video_id"),  # not in the catalog
        ({"action": "view", "video_id": 2**63}, "video_id"),  # past every id column
        ({"action": "watch", "video_id": 5, "watch_ms": 24 * 3600 * 1000}, "watch_ms"),
        ({"action": "view", "video_id": 5, "occurred_at": "0001-01-01T00:00:00Z"},
         "occurred_at"),
    ]:
        r = client.post("/api/v1/events", json={"events": [bad_event]}, headers=headers)
        assert r.status_code == 422, bad_event
        assert {f["field"] for f in r.json()["error"]["fields"]} == {f"events.0.{field}"}
    with sessions() as s:
        assert len(list(s.scalars(select(OutboxRow)))) == 2, "a rejected batch writes nothing"
    assert client.post("/api/v1/events", json=batch).status_code == 401


def test_feed_media_urls_resolve_on_the_local_store(client: TestClient, settings: Settings) -> None:
    """The URLs a feed item carries are served by the app itself when blobs are local."""
    store = open_blob_store(settings)
    store.put("videos/7/thumbnail.jpg", b"thumbnail bytes", "image/jpeg")
    urls = MediaUrls(store, PlaylistSigner.from_settings(settings))

    def fetch(url: str) -> httpx.Response:
        u = urlsplit(url)  # pre-signed for ``api_base_url``; the test client is that server
        return client.get(f"{u.path}?{u.query}")

    r = fetch(urls.get(7)["thumbnail"])  # the design's item has a thumbnail, no poster
    assert r.status_code == 200 and r.content == b"thumbnail bytes"
    assert r.headers["content-type"] == "image/jpeg"
    r = fetch(urls.get(8)["hls"])  # the signed playlist route: no ladder stored for video 8
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_signed_upload_may_exceed_the_api_body_cap(client: TestClient,
                                                     settings: Settings) -> None:
    """The API caps bodies at ``api_max_body_bytes``; a video PUT to the local store's signed
    URL is capped by ``upload_max_bytes`` instead, so a real clip is not refused."""
    size = settings.api_max_body_bytes + 1024
    assert size <= settings.upload_max_bytes
    url = urlsplit(open_blob_store(settings).presign_put("uploads/big.mp4", 60, "video/mp4"))
    r = client.put(f"{url.path}?{url.query}", content=b"\0" * size,
                   headers={"Content-Type": "video/mp4"})
    assert r.status_code < 300, r.text
    assert open_blob_store(settings).get("uploads/big.mp4") == b"\0" * size
    r = client.post("/api/v1/auth/register", content=b"{" + b" " * size + b"}",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_worker_threads_do_not_outnumber_pooled_connections(settings: Settings) -> None:
    """Each sync route holds one pooled connection on a worker thread: with more threads than
    pooled connections a burst opens overflow connections and closes them again on return."""
    migrate(settings.database_url)
    small = settings.model_copy(update={"database_pool_size": 3})
    with TestClient(create_app(small, feed_services=False)) as client:
        def tokens() -> float:
            return anyio.to_thread.current_default_thread_limiter().total_tokens

        assert client.portal.call(tokens) == 3


def test_serve_api_no_feed_gives_its_workers_an_api_without_the_feed(
        settings: Settings, clean_env: pytest.MonkeyPatch) -> None:
    """``reelrank serve api --no-feed`` (the social and reliability benchmarks' API): the worker
    processes read their settings from the environment, so the option goes there, and each
    worker's app loads no feed (its routes answer 503) while the platform routes serve."""
    clean_env.setenv("REELRANK_API_FEED", "true")  # put back after the test
    launched: dict[str, bool] = {}
    clean_env.setattr("serving.cli.serving_threads", lambda: None)  # the test's own torch
    clean_env.setattr("serving.launch.run_api", lambda s, host, port, workers: launched.update(
        feed=s.api_feed))
    serve_api(port=0, feed=False)
    assert launched == {"feed": False}
    with TestClient(worker_app()) as client:
        assert client.app.state.feeds is None
        auth = signup(client, "nofeed")
        assert client.get("/api/v1/users/me", headers=auth).status_code == 200
        r = client.get("/api/v1/feed/for-you", headers=auth)
        assert r.status_code == 503 and "not running" in r.json()["error"]["message"]
