"""``reelrank worker features`` on the real event bus, on both online stores."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.config import Settings, get_settings
from core.events import Action, Event, UserInteraction, VideoProcessed, encode
from features.online import FeatureReader, OnlineFeatures
from features.stream import run
from platform_services.bus import Message
from platform_services.bus.models import ProcessedEvent
from platform_services.bus.worker import WorkerConfig
from platform_services.runtime import Runtime
from platform_services.storage.db import migrate

FAST = WorkerConfig(poll_timeout_ms=50, backoff_s=0.01, session_timeout_ms=6_000)


@dataclass
class Live:
    settings: Settings
    rt: Runtime
    reader: FeatureReader

    async def publish(self, *events: Event) -> None:
        await self.rt.bus.publish([Message(e.topic, e.key, encode(e)) for e in events])

    def read(self, user: int, videos: list[int], at: datetime | None = None) -> OnlineFeatures:
        return self.reader.get(user, videos, now=at)

    def processed(self, events: list[Event]) -> int:
        ids = [str(e.event_id) for e in events]
        with self.rt.sessions() as s:
            query = select(func.count()).where(ProcessedEvent.event_id.in_(ids))
            return s.scalar(query.select_from(ProcessedEvent)) or 0


async def until(cond: Callable[[], bool], timeout_s: float = 15.0) -> float:
    """Seconds until ``cond()`` held (polling every 20 ms); fails after ``timeout_s``."""
    started = time.perf_counter()
    while not cond():
        assert time.perf_counter() - started < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


@pytest.fixture
async def live(built: Settings, clean_env: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    """The features worker running on ``built``'s store, warmed up by one event."""
    clean_env.setenv("REELRANK_FEATURE_LATENESS_S", "300")
    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    rt = Runtime.from_settings(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, FAST))
    env = Live(settings, rt, FeatureReader(settings, timeout_ms=5_000))
    try:
        await env.publish(UserInteraction(user_id=1, action=Action.VIEW, video_id=79))
        await until(lambda: env.read(1, [79]).items.loc[79, "v_rt_views_5m"] == 1, 60)
        yield env
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await rt.close()


def _ev(user: int, action: Action, video: int, at: datetime) -> UserInteraction:
    return UserInteraction(user_id=user, action=action, video_id=video, occurred_at=at)


async def test_pushes_are_online_within_2s_in_their_event_time_minute(live: Live) -> None:
    now = datetime.now(UTC)
    video, other = 5, 6
    started = time.perf_counter()
    await live.publish(
        _ev(3, Action.WATCH, video, now - timedelta(seconds=10)),
        _ev(3, Action.WATCH, other, now - timedelta(seconds=8)),
        _ev(3, Action.LIKE, video, now - timedelta(seconds=5)),
    )
    await until(lambda: live.read(3, [video]).items.loc[video, "v_rt_likes_5m"] == 1)
    assert time.perf_counter() - started < 2.0, "push not visible online within 2 s"

    # Out of order: 3 minutes late counts in its own minute; 20 minutes and 2 hours late
    # are past the 5-minute lateness and only reach the batch features.
    late = [
        _ev(4, Action.VIEW, video, now - timedelta(minutes=3)),
        _ev(4, Action.VIEW, video, now - timedelta(minutes=20)),
        _ev(4, Action.VIEW, video, now - timedelta(hours=2)),
    ]
    await live.publish(*late)
    await until(lambda: live.processed(late) == 3)
    row = live.read(3, [video], at=now).items.loc[video]
    assert (row["v_rt_views_5m"], row["v_rt_views_1h"], row["v_rt_likes_1h"]) == (2, 2, 1)
    later = live.read(3, [video], at=now + timedelta(seconds=150)).items.loc[video]
    assert (later["v_rt_views_5m"], later["v_rt_views_1h"]) == (1, 2)  # the late one aged out

    user = live.read(3, [], at=now).user
    assert user["u_last_watched"] == [other, video]  # newest first
    assert set(user["u_seen"]) == {video, other}
    topics = live.read(3, [video, other]).items["v_topic"]
    assert user["u_session_topics"] == list(dict.fromkeys([topics[video], topics[other]]))
    assert user["u_session_events"] == 3


async def test_a_new_upload_has_features_before_any_batch_build(live: Live) -> None:
    processed = VideoProcessed(video_id=90_001, owner_id=7, status="ready", duration_ms=12_345)
    await live.publish(processed)
    await until(lambda: live.read(3, [90_001]).items.loc[90_001, "v_creator_id"] == 7)
    row = live.read(3, [90_001]).items.loc[90_001]
    assert (row["v_is_new"], row["v_duration_ms"]) == (1, 12_345)
    assert 0 <= row["v_age_hours"] < 0.1


async def test_redelivery_does_not_double_count_and_future_events_are_dead_lettered(
    live: Live,
) -> None:
    now = datetime.now(UTC)
    watches = [_ev(u, Action.WATCH, 9, now - timedelta(seconds=1)) for u in range(30)]
    future = _ev(2, Action.LIKE, 9, now + timedelta(hours=1))
    await live.publish(*watches, *watches[:10], future, *watches[20:])  # 30 duplicates
    await until(lambda: live.processed(watches) == 30)
    dlq = live.rt.bus.consumer("test-dlq", ["user.interaction.dlq"], session_timeout_ms=6_000)
    await dlq.start()
    records: list = []
    try:
        deadline = time.monotonic() + 15
        while not records and time.monotonic() < deadline:
            records += await dlq.poll(10, 200)
    finally:
        await dlq.stop()
    assert len(records) == 1 and "in the future" in json.loads(records[0].value)["error"]
    await asyncio.sleep(0.3)  # let any (wrong) second application land before reading
    row = live.read(0, [9], at=now).items.loc[9]
    assert (row["v_rt_views_5m"], row["v_rt_likes_5m"]) == (30, 0)
