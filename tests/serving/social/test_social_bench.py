"""The social benchmark's own checks: its world is what the API stores, and its counter
check finds a counter that disagrees with the rows (so ``exact: yes`` in the report means
something)."""

from __future__ import annotations

import random

from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from benchmarks.social import QUICK, Size, counter_mismatches, seed, write_plan
from platform_services.storage.models import VideoStats
from platform_services.storage.social_models import Like
from tests.serving.social.conftest import make_account


def test_seeded_threads_read_through_the_api_and_counters_are_checked(api: TestClient) -> None:
    size = Size(users=30, videos=5, comments=400, rates=(10,), thread_rate=10, seconds=1.0,
                thread_seconds=1.0)
    engine = api.app.state.runtime.engine
    big = seed(engine, size)
    reader = make_account(api, "reader")
    r = api.get(f"/api/v1/videos/{big}/comments?page_size=20&replies=50",
                headers=reader.headers)
    assert r.status_code == 200 and len(r.json()["comments"]) == 20
    assert counter_mismatches(engine) == 0
    with engine.begin() as conn:
        conn.execute(insert(Like), [{"user_id": 1, "video_id": 2}])
    assert counter_mismatches(engine) == 2, "the video's likes and its creator's total_likes"
    with engine.begin() as conn:
        conn.execute(insert(VideoStats), [{"video_id": 2, "likes": 1, "views": 0,
                                           "comments": 0, "shares": 0, "skips": 0,
                                           "reports": 0, "watch_ms": 0}])
    assert counter_mismatches(engine) == 1
    with engine.begin() as conn:
        conn.execute(update(VideoStats).values(likes=0))
    assert counter_mismatches(engine) == 2


def test_plans_never_self_follow_and_mix_do_and_undo() -> None:
    plan = write_plan(QUICK, "follows", 500, 999, [1], random.Random(0))
    assert len(plan) == 1000
    for method, path, who, kind in plan:
        assert int(path.split("/")[4]) != who + 1
        assert (method == "DELETE") == (kind == "unfollow")
    assert 0.1 < sum(k == "unfollow" for *_, k in plan) / len(plan) < 0.3
