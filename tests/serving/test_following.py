"""The hybrid following feed: fan-out on ``video.processed`` (push below the threshold, pull
above it) through the real worker framework, a crash mid-way and its redelivery, and
``GET /feed/following`` over a real Redis and SQLite: merge, cursor, unfollow, visibility,
blocks, and the rebuild after Redis is flushed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.clock import utcnow
from core.config import Settings
from core.events import VideoProcessed
from platform_services import fanout, social
from platform_services.auth import issue_token
from platform_services.bus.worker import Worker
from platform_services.runtime import Runtime
from platform_services.storage.cache import redis_client
from platform_services.storage.db import migrate
from platform_services.storage.models import (
    Follow,
    Moderation,
    User,
    Video,
    VideoStatus,
    Visibility,
)
from platform_services.storage.social_models import UserStats
from serving.app import create_app
from tests.serving.conftest import FeedClient

FEED = "/api/v1/feed/following"


def add_users(sessions, n: int, prefix: str = "u") -> list[int]:  # noqa: ANN001
    with sessions.begin() as s:
        users = [User(username=f"{prefix}{i}", email=f"{prefix}{i}@x.io", password_hash="x")
                 for i in range(n)]
        s.add_all(users)
        s.flush()
        return [u.id for u in users]


def add_video(sessions, owner: int, minutes_ago: float, **kw: object) -> int:  # noqa: ANN001
    values = {"title": "v", "status": VideoStatus.READY, "visibility": Visibility.PUBLIC,
              "duration_ms": 10_000, "created_at": utcnow() - timedelta(minutes=minutes_ago)}
    with sessions.begin() as s:
        video = Video(owner_id=owner, **(values | kw))
        s.add(video)
        s.flush()
        return video.id


def follow_all(sessions, followers: list[int], creator: int) -> None:  # noqa: ANN001
    with sessions.begin() as s:
        s.add_all(Follow(follower_id=f, followee_id=creator) for f in followers)
        stats = s.get(UserStats, creator) or UserStats(user_id=creator, following=0,
                                                      total_likes=0, followers=0)
        stats.followers = (stats.followers or 0) + len(followers)
        s.add(stats)


def processed(video_id: int, owner: int) -> VideoProcessed:
    return VideoProcessed(video_id=video_id, owner_id=owner, status="ready")


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    migrate(settings.database_url)
    runtime = Runtime.from_settings(settings)
    yield runtime
    asyncio.run(runtime.close())


def test_fan_out_999_followers_survives_a_crash_mid_way(settings: Settings, rt: Runtime) -> None:
    """Batches of 200: the worker dies after the second; the redelivered event resumes at
    follower 401, and every follower ends with the video exactly once."""
    creator, *fans = add_users(rt.sessions, 1001)
    follow_all(rt.sessions, fans[:999], creator)
    vid = add_video(rt.sessions, creator, 1)
    r = redis_client(settings.redis_url)
    cfg = fanout.FanoutConfig(threshold=1000, feed_len=50, batch=200)
    event = processed(vid, creator)

    class Crash(Exception):
        pass

    def crash_after_two(done: int) -> None:
        if done >= 400:
            raise Crash

    def dying(session, events) -> None:  # noqa: ANN001
        for e in events:
            fanout.fan_out(session, r, e.video_id, cfg, after_batch=crash_after_two)

    with pytest.raises(Crash):
        Worker(fanout.GROUP, fanout.TOPICS, dying, rt.bus, rt.sessions)._apply([event])
    assert int(r.get(fanout.progress_key(vid))) == fans[399]
    assert sum(r.exists(fanout.feed_key(f)) for f in fans[:999]) == 400
    written: list[int] = []

    def resumed(session, events) -> None:  # noqa: ANN001
        written.extend(fanout.fan_out(session, r, e.video_id, cfg) for e in events)

    worker = Worker(fanout.GROUP, fanout.TOPICS, resumed, rt.bus, rt.sessions)
    worker._apply([event])
    worker._apply([event])  # a duplicate delivery after the commit: skipped by event id
    assert written == [599], "the redelivery resumed after the last finished batch"
    for f in fans[:999]:
        assert r.zrange(fanout.feed_key(f), 0, -1) == [f"{vid}:{creator}".encode()]
    assert not r.exists(fanout.feed_key(fans[999])), "not a follower"
    # A creator at the threshold is pulled at read time: nothing is pushed.
    follow_all(rt.sessions, [fans[999]], creator)
    big_vid = add_video(rt.sessions, creator, 0.5)
    with rt.sessions.begin() as s:
        assert fanout.fan_out(s, r, big_vid, cfg) == 0
    assert r.zcard(fanout.feed_key(fans[0])) == 1
    r.close()


def test_fanout_worker_end_to_end_on_the_bus(settings: Settings, rt: Runtime) -> None:
    """``reelrank worker fanout``'s own loop: processed videos, a follow's back-fill, an
    unfollow, a poison message dead-lettered while the rest go on."""
    from platform_services.bus.base import Message
    from platform_services.bus.outbox import OutboxRelay, emit

    creator, a, b = add_users(rt.sessions, 3)
    follow_all(rt.sessions, [a], creator)
    v1, v2 = add_video(rt.sessions, creator, 3), add_video(rt.sessions, creator, 2)
    r = redis_client(settings.redis_url)
    r.zadd(fanout.feed_key(a), {f"{v1}:{creator}": 1})  # pushed before ``a`` unfollows
    with rt.sessions.begin() as s:
        emit(s, processed(v1, creator), processed(v2, creator))
        social.follow(s, b, creator)
        social.unfollow(s, a, creator)

    async def go() -> None:
        relay = OutboxRelay(rt.sessions, rt.bus)
        while await relay.run_once():
            pass
        await rt.bus.publish([Message("video.processed", "1", b"{not json")])
        stop = asyncio.Event()
        task = asyncio.create_task(fanout.run_worker(settings, stop))
        for _ in range(200):
            if r.zcard(fanout.feed_key(b)) == 2 and not r.exists(fanout.feed_key(a)):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(go())
    assert [m.decode() for m in r.zrevrange(fanout.feed_key(b), 0, -1)] == [
        f"{v2}:{creator}", f"{v1}:{creator}"], "the follow back-filled, newest first"
    assert r.zcard(fanout.feed_key(a)) == 0, "the unfollow removed the creator"
    r.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    migrate(settings.database_url)
    local = settings.model_copy(update={"ranker_backend": "local", "catalog_refresh_s": 3600})
    with FeedClient(create_app(local)) as c:
        yield c


def pages(client: TestClient, headers: dict, size: int, stop_after: int | None = None,
          between=None) -> list[int]:  # noqa: ANN001
    ids, cursor, n = [], None, 0
    while True:
        params = {"page_size": size} | ({"cursor": cursor} if cursor else {})
        r = client.get(FEED, headers=headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["videos"]) <= size and body["has_more"] == (body["next_cursor"] is not None)
        ids += [it["video_id"] for it in body["videos"]]
        cursor, n = body["next_cursor"], n + 1
        if between is not None and n == stop_after:
            between()
        if cursor is None:
            return ids


def test_following_feed_merges_push_and_pull(client: TestClient, settings: Settings) -> None:
    svc = client.app.state.feeds.svc
    sessions = svc.catalog.sessions
    viewer, small, big, blocked, stranger = add_users(sessions, 5)
    follow_all(sessions, [viewer], small)
    follow_all(sessions, [viewer], big)
    follow_all(sessions, [viewer], blocked)
    with sessions.begin() as s:  # ``big`` is over the threshold: its videos are pulled
        s.get(UserStats, big).followers = settings.following_push_max_followers
    minutes = iter(range(100, 0, -1))
    small_v = [add_video(sessions, small, next(minutes)) for _ in range(5)]
    big_v = [add_video(sessions, big, next(minutes)) for _ in range(5)]
    hidden = [
        add_video(sessions, small, next(minutes), visibility=Visibility.PRIVATE),
        add_video(sessions, small, next(minutes), status=VideoStatus.PROCESSING),
        add_video(sessions, small, next(minutes), moderation=Moderation.NEEDS_REVIEW),
        add_video(sessions, stranger, next(minutes)),
        add_video(sessions, blocked, next(minutes)),
    ]
    fans_only = add_video(sessions, small, next(minutes), visibility=Visibility.FOLLOWERS)
    cfg = fanout.FanoutConfig.from_settings(settings)
    with sessions.begin() as s:
        for v in [*small_v, fans_only, *hidden[:3]]:
            fanout.fan_out(s, svc.redis, v, cfg)
        social.block(s, viewer, blocked)
    svc.catalog.refresh()
    assert svc.redis.zcard(fanout.feed_key(viewer)) == 6, "pushed: small creator, feedable"
    h = {"Authorization": f"Bearer {issue_token(settings, viewer)}"}
    with svc.catalog.sessions() as s:
        created = dict(s.execute(select(Video.id, Video.created_at)).all())
    expected = sorted([*small_v, *big_v, fans_only], key=lambda v: created[v], reverse=True)
    for size in (1, 3, 50):
        assert pages(client, h, size) == expected

    # Redis flushed: the pushed set is rebuilt from the database, same feed.
    svc.redis.flushdb()
    assert pages(client, h, 4) == expected
    assert svc.redis.exists(fanout.built_key(viewer))

    # A deleted video vanishes; an unfollow between pages removes the creator after it.
    with sessions.begin() as s:
        s.get(Video, big_v[0]).status = VideoStatus.REMOVED
    svc.catalog.refresh()

    def unfollow() -> None:
        with sessions.begin() as s:
            social.unfollow(s, viewer, small)

    got = pages(client, h, 2, stop_after=1, between=unfollow)
    assert big_v[0] not in got
    assert not set(got[2:]) & {*small_v, fans_only}, "no unfollowed creator after the unfollow"
    assert [v for v in expected if v in big_v and v != big_v[0]] == [
        v for v in got if v in big_v]


def test_bad_input_is_4xx(client: TestClient, settings: Settings) -> None:
    (viewer, other) = add_users(client.app.state.feeds.svc.catalog.sessions, 2)
    h = {"Authorization": f"Bearer {issue_token(settings, viewer)}"}
    assert client.get(FEED).status_code == 401
    for size in (0, 51, "x"):
        r = client.get(FEED, headers=h, params={"page_size": size})
        assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "page_size"
    from platform_services.signing import sign

    assert settings.signing_secret is not None
    others = sign(settings.signing_secret, "following", other, {"t": 1, "v": 1, "o": 0})
    missing = sign(settings.signing_secret, "following", viewer, {"t": 1})
    for bad in ("abc", "a.b", "ü.ü", others, missing, others[:-3] + "AAA"):
        r = client.get(FEED, headers=h, params={"cursor": bad})
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"], bad
    assert client.get(FEED, headers=h, params={"cursor": "x" * 600}).status_code == 422
