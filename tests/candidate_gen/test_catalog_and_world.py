"""The world loader and the catalog snapshot, on SQLite and the embedded Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select, update

from candidate_gen.catalog import FOLLOWERS, PRIVATE, PUBLIC, Catalog
from core.config import Settings
from core.dataset_schema import DataError
from core.events import Action, UserInteraction
from platform_services.counters import apply_counts
from platform_services.storage.cache import redis_client
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import Follow, User, Video, VideoStats, VideoStatus
from platform_services.storage.social_models import UserStats
from platform_services.trending import top
from training.datasets.store import load_dataset, write_dataset
from training.datasets.synth import SynthConfig, generate, recent_start
from training.datasets.world import load_world


@pytest.fixture
def loaded(settings: Settings):  # noqa: ANN201
    cfg = SynthConfig(n_users=120, n_videos=400, days=3, seed=1, start=recent_start(3))
    write_dataset("synth", generate(cfg), "synth", root=settings.data_dir)
    migrate(settings.database_url)
    report = load_world(settings, load_dataset("synth", settings.data_dir))
    engine = make_engine(settings.database_url)
    yield report, session_factory(engine)
    engine.dispose()


def test_world_load_keeps_ids_and_mixes_visibility(loaded, settings: Settings) -> None:
    report, sessions = loaded
    assert (report.users, report.videos) == (120, 400) and report.follows > 0
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Follow)) == report.follows
        vis = dict(s.execute(select(Video.visibility, func.count())
                             .group_by(Video.visibility)).all())
        assert vis["public"] > 350 and vis.get("private", 0) + vis.get("followers", 0) > 0
        assert s.get(User, 7).username == "u7" and s.get(Video, 0) is not None
    assert top(redis_client(settings.redis_url), "7d"), "trending seeded from the log"
    with sessions() as s:  # user counters start from what was loaded (the worker adds to them)
        stats = {r.user_id: r for r in s.scalars(select(UserStats))}
        follows = s.execute(select(Follow.follower_id, Follow.followee_id)).all()
        likes = dict(s.execute(select(Video.owner_id, func.sum(VideoStats.likes))
                               .join(VideoStats, VideoStats.video_id == Video.id)
                               .group_by(Video.owner_id)).all())
    for user in {u for pair in follows for u in pair} | set(likes):
        row = stats[user]
        assert row.following == sum(f == user for f, _ in follows)
        assert row.followers == sum(f == user for _, f in follows)
        assert row.total_likes == likes.get(user, 0)
    synth = load_dataset("synth", settings.data_dir)
    with pytest.raises(DataError, match="already has 120 users"):
        load_world(settings, synth)
    assert load_world(settings, synth, replace=True).videos == 400


def test_catalog_snapshot_follows_the_database(loaded) -> None:
    _, sessions = loaded
    catalog = Catalog(sessions, stats_every_s=0)
    assert catalog.refresh() == 400
    snap = catalog.snapshot
    with sessions() as s:
        rows = s.execute(select(Video.id, Video.owner_id, Video.status, Video.visibility)).all()
    for r in rows:
        assert snap.owner[r.id] == r.owner_id
        assert snap.ready[r.id] == (r.status == VideoStatus.READY)
        assert snap.visibility[r.id] == {"public": PUBLIC, "followers": FOLLOWERS,
                                         "private": PRIVATE}[r.visibility]
    assert snap.views.sum() > 0 and len(snap.explore_pool) > 0
    assert not snap.known(np.array([-1, 400, 10**9])).any()
    owner = int(snap.owner[0])
    assert all(snap.created_ms[a] >= snap.created_ms[b]
               for a, b in zip(snap.by_owner[owner], snap.by_owner[owner][1:], strict=False))

    assert catalog.refresh() == 0 or catalog.snapshot.owner[0] == owner  # nothing new
    with sessions.begin() as s:
        s.execute(update(Video).where(Video.id == 0).values(status=VideoStatus.REMOVED))
        s.add(Video(id=400, owner_id=owner, title="brand new #pets", category="pets",
                    status=VideoStatus.READY, duration_ms=9000))
    assert catalog.refresh() >= 2
    snap = catalog.snapshot
    assert not snap.ready[0] and snap.ready[400] and snap.topics[snap.topic[400]] == "pets"
    assert snap.fresh(int(datetime.now(UTC).timestamp() * 1000) - 60_000, 5).tolist() == [400]
    assert snap.by_owner[owner][0] == 400


def test_catalog_reads_only_the_counters_the_worker_changed(loaded) -> None:
    """After its first read the catalog reads the ``video_stats`` rows stamped since (the
    counters worker stamps what it changes): a row changed without a stamp is not read, so
    the counts it shows come from the stamped rows alone."""
    _, sessions = loaded
    with sessions.begin() as s:  # the world's rows written an hour ago, one counted since
        s.execute(update(VideoStats).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
        apply_counts(s, [UserInteraction(user_id=1, action=Action.VIEW, video_id=1)])
    catalog = Catalog(sessions, stats_every_s=0)
    catalog.refresh()
    before = catalog.snapshot
    with sessions.begin() as s:  # behind the worker's back: no new stamp
        s.execute(update(VideoStats).where(VideoStats.video_id == 5)
                  .values(views=VideoStats.views + 1000, updated_at=VideoStats.updated_at))
        apply_counts(s, [UserInteraction(user_id=1, action=Action.LIKE, video_id=7),
                         UserInteraction(user_id=2, action=Action.LIKE, video_id=7),
                         UserInteraction(user_id=1, action=Action.VIEW, video_id=9)])
    catalog.refresh()
    snap = catalog.snapshot
    assert snap.views[5] == before.views[5]  # not stamped: not read
    assert snap.likes[7] == before.likes[7] + 2 and snap.views[9] == before.views[9] + 1
    changed = (snap.views != before.views) | (snap.likes != before.likes)
    assert np.flatnonzero(changed).tolist() == [7, 9]
    with sessions.begin() as s:  # a stamped change of the same row is read
        apply_counts(s, [UserInteraction(user_id=3, action=Action.VIEW, video_id=5)])
    catalog.refresh()
    with sessions() as s:
        assert catalog.snapshot.views[5] == s.get(VideoStats, 5).views


def test_catalog_derives_again_only_when_something_changed(loaded) -> None:
    """A stats period that reads no counter and no video keeps the derived arrays (quality,
    per-creator lists, exploration pool: ~30 ms on 100k videos per API process); a counter
    the worker changed derives them again."""
    _, sessions = loaded
    with sessions.begin() as s:
        s.execute(update(VideoStats).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
    catalog = Catalog(sessions, stats_every_s=0)
    catalog.refresh()
    before = catalog.snapshot
    assert catalog.refresh() == 0
    assert catalog.snapshot.quality is before.quality
    with sessions.begin() as s:
        apply_counts(s, [UserInteraction(user_id=1, action=Action.LIKE, video_id=3)])
    catalog.refresh()
    assert catalog.snapshot.quality[3] > before.quality[3]
