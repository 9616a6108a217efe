"""The accounts and social API on both databases: ``api`` is a client of an app migrated on
SQLite or on PostgreSQL (the same tests run on each), plus helpers to make users and videos."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from platform_services import counters
from platform_services.bus.base import Message
from platform_services.bus.models import OutboxRow, ProcessedEvent
from platform_services.bus.outbox import OutboxRelay
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.runtime import Runtime
from platform_services.storage.db import migrate
from platform_services.storage.models import Role, User, Video, VideoStatus, Visibility
from serving.app import create_app

PASSWORD = "correct horse battery"
FAST = WorkerConfig(poll_timeout_ms=100, backoff_s=0.01, session_timeout_ms=6_000)


@pytest.fixture(params=["sqlite", "postgres"])
def api_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "postgres":
        request.getfixturevalue("clean_env").setenv(
            "REELRANK_DATABASE_URL", request.getfixturevalue("postgres_db"))
        get_settings.cache_clear()
        settings = get_settings()
    migrate(settings.database_url)
    return settings


@pytest.fixture
def api(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, feed_services=False)) as c:
        yield c


@dataclass
class Account:
    id: int
    username: str
    headers: dict[str, str]
    refresh_token: str


def sessions_of(client: TestClient) -> sessionmaker[Session]:
    return client.app.state.runtime.sessions


def make_account(client: TestClient, name: str, role: Role = Role.USER) -> Account:
    """Register ``name`` (with ``role``, set in the database) and log in."""
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    r = client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    if role != Role.USER:
        with sessions_of(client).begin() as s:
            s.get(User, user_id).role = role
    r = client.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    t = r.json()
    return Account(user_id, name, {"Authorization": f"Bearer {t['access_token']}"},
                   t["refresh_token"])


def make_video(client: TestClient, owner: Account,
               visibility: Visibility = Visibility.PUBLIC,
               status: VideoStatus = VideoStatus.READY, duration_ms: int = 15_000) -> int:
    """A video row as the media pipeline would leave it (upload is another issue's API)."""
    with sessions_of(client).begin() as s:
        video = Video(owner_id=owner.id, title="a video", visibility=visibility, status=status,
                      duration_ms=duration_ms)
        s.add(video)
        s.flush()
        return video.id


def drain_counters(settings: Settings, redeliver: bool = False) -> None:
    """Run the real pipeline until idle: the outbox relay publishes the committed events and
    the ``counters`` worker applies them. ``redeliver`` publishes every event a second time
    first (a relay crash between publish and mark), which the worker must absorb."""
    asyncio.run(_drain(settings, redeliver))


async def _drain(settings: Settings, redeliver: bool) -> None:
    rt = Runtime.from_settings(settings)
    try:
        relay = OutboxRelay(rt.sessions, rt.bus)
        while await relay.run_once():
            pass
        with rt.sessions() as s:
            rows = s.scalars(select(OutboxRow).where(OutboxRow.topic == "user.interaction"))
            messages = [Message(r.topic, r.key, r.value) for r in rows]
        if redeliver:
            await rt.bus.publish(messages)
        worker = Worker("counters", counters.TOPICS, counters.apply_counts, rt.bus,
                        rt.sessions, FAST)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 60
        try:
            while _processed(rt) < len(messages):
                if task.done():
                    task.result()
                assert time.monotonic() < deadline, "the counters worker did not catch up"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3 if redeliver else 0)  # let the duplicates arrive too
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await rt.close()


def _processed(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(ProcessedEvent)
                        .where(ProcessedEvent.consumer == "counters")) or 0


def post_comment(api: TestClient, who: Account, video: int, text: str,
                 parent: int | None = None) -> int:
    """A comment (or a reply to ``parent``) by ``who``; its id."""
    r = api.post(f"/api/v1/videos/{video}/comments", headers=who.headers,
                 json={"content": text, "parent_comment_id": parent})
    assert r.status_code == 201, r.text
    return r.json()["comment_id"]
