"""Batch-feature staleness online (issue 12): each view's age after a materialization, the TTL
rule that makes a view degraded, the gauge, and the scheduled refresh that moves the
snapshots forward with the live interaction log."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from core.cli import WORKERS, resolve
from core.config import Settings
from features.freshness import (
    StaleFeaturesError,
    check_coverage,
    export_ages,
    is_stale,
    stale_views,
    view_ages,
)
from features.refresh import refresh_once, run
from features.repo import BATCH_VIEWS, SNAPSHOT_TTL
from features.store import read_meta, repo_dir
from platform_services.storage.db import make_engine
from training.datasets.store import write_dataset

pytestmark = pytest.mark.parametrize("store_settings", ["sqlite"], indirect=True)


def _newest(settings: Settings) -> pd.Timestamp:
    """The newest snapshot (``built`` materialized up to now, so it is online)."""
    return pd.Timestamp(read_meta(settings)["snapshots_ms"][-1], unit="ms", tz="UTC")


def test_ages_ttl_and_gauge_after_a_materialization(built: Settings) -> None:
    newest = _newest(built)
    ages = view_ages(built, newest + timedelta(hours=5))
    assert set(ages) == {v.name for v in BATCH_VIEWS}
    assert all(np.isfinite(a) and a >= 5 * 3600 for a in ages.values())
    soon = newest + SNAPSHOT_TTL - timedelta(hours=1) - timedelta(days=1)
    late = newest + SNAPSHOT_TTL + timedelta(days=2)
    assert not is_stale("video_stats", built, soon) and stale_views(built, soon) == []
    assert is_stale("video_stats", built, late)
    assert set(stale_views(built, late)) == {"user_profile", "video_stats", "creator_stats"}
    assert not is_stale("user_creator", built, late), "no TTL: cumulative, never stale"
    assert not is_stale("user_realtime", built, late), "push views: the stream's business"
    export_ages(built, late)
    got = REGISTRY.get_sample_value("reelrank_feature_view_age_seconds", {"view": "video_stats"})
    assert got == pytest.approx(view_ages(built, late)["video_stats"])


def test_never_materialized_views_are_stale(store_settings: Settings) -> None:
    assert view_ages(store_settings)["video_stats"] == float("inf")
    assert is_stale("video_stats", store_settings)


def test_rows_after_the_build_are_refused(built: Settings) -> None:
    meta = read_meta(built)
    end = meta["log_end_ms"]
    check_coverage(meta, np.array([end - 1, end]))
    with pytest.raises(StaleFeaturesError, match="1 of 2 impressions"):
        check_coverage(meta, np.array([end, end + 1]))
    with pytest.raises(StaleFeaturesError, match="no batch build yet"):
        check_coverage({}, np.array([0]))


def test_refresh_moves_snapshots_forward_with_the_live_log(
    store_settings: Settings, world: dict, clean_env: pytest.MonkeyPatch
) -> None:
    from experiments.models import Interaction

    write_dataset("synth", world, "synth", root=store_settings.data_dir)
    first = refresh_once(store_settings)
    assert first["live_events"] == 0 and first["materialized_rows"] > 0
    before = read_meta(store_settings)
    # Two days of live events after the data set: the next refresh must include them.
    video = int(world["items"]["item_id"].iloc[0])
    start = pd.Timestamp(before["log_end_ms"], unit="ms", tz="UTC")
    engine = make_engine(store_settings.database_url)
    Interaction.__table__.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(Interaction.__table__.insert(), [
            {"event_id": str(uuid.uuid4()), "user_id": int(world["users"]["user_id"].iloc[i]),
             "action": "view", "video_id": video, "author_id": None, "watch_ms": 5000,
             "duration_ms": 10000, "occurred_at": (start + timedelta(hours=2 + i)).to_pydatetime()}
            for i in range(30)
        ])
    engine.dispose()
    now = start + timedelta(days=2, hours=1)
    second = refresh_once(store_settings, now.to_pydatetime())
    assert second["live_events"] == 30
    after = read_meta(store_settings)
    assert after["log_end_ms"] > before["log_end_ms"]
    assert second["age_s"]["video_stats"] < 24 * 3600
    stats = pd.read_parquet(repo_dir(store_settings) / "data/video_stats.parquet")
    newest = stats[stats["video_id"] == video].sort_values("event_timestamp").iloc[-1]
    assert newest["views_7d"] >= 30
    assert stale_views(store_settings, now.to_pydatetime()) == []


def test_worker_is_registered_and_refreshes_until_stopped(
    store_settings: Settings, world: dict
) -> None:
    assert resolve(WORKERS["features-refresh"]) is run
    write_dataset("synth", world, "synth", root=store_settings.data_dir)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run(store_settings, stop))
        for _ in range(600):
            if (repo_dir(store_settings) / "materialized.json").is_file():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert np.isfinite(view_ages(store_settings)["video_stats"])


def test_a_restarted_worker_waits_for_the_schedule(store_settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A materialization under ``features_refresh_s`` old is not rebuilt at start (a restart
    after a build, as in ``make demo``); one older, or none, is due at once."""
    import json
    from datetime import UTC, datetime

    from features import refresh
    from features.freshness import refresh_due_in

    assert refresh_due_in(store_settings) == 0.0  # nothing materialized yet
    state = repo_dir(store_settings) / "materialized.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    period = store_settings.features_refresh_s

    def materialized(at: datetime) -> None:
        state.write_text(json.dumps({"materialized_at": at.isoformat(), "snapshots_ms": {}}))

    materialized(now)
    assert refresh_due_in(store_settings, now) == period
    assert refresh_due_in(store_settings, now + timedelta(seconds=period / 2)) == period / 2
    assert refresh_due_in(store_settings, now + timedelta(seconds=period + 1)) == 0.0

    calls: list[Settings] = []
    monkeypatch.setattr(refresh, "refresh_once", lambda s: calls.append(s) or {})

    def started_for(seconds: float) -> list[Settings]:
        calls.clear()

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(run(store_settings, stop))
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.wait_for(task, 5)

        asyncio.run(main())
        return list(calls)

    assert started_for(0.5) == []  # built a moment ago: waits for its schedule
    materialized(now - timedelta(seconds=period + 1))
    assert started_for(0.5) == [store_settings]  # overdue: at once
