"""Batch snapshots and window arithmetic, checked against brute-force recounts of the log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.clock import DAY_MS
from features.batch import SMOOTHING, build_features, prepare_log, prior_defaults
from features.windows import EventIndex, log_window_counts, pack, window_sums


@pytest.fixture(scope="module")
def feats(world: dict[str, pd.DataFrame]):  # noqa: ANN201
    return build_features(world["interactions"], world["items"], world["users"], world["follows"])


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def test_video_snapshots_recount(feats, world) -> None:  # noqa: ANN001
    log = prepare_log(world["interactions"], world["items"], feats.meta["topics"])
    rows = feats.frames["video_stats"].sample(60, random_state=1)
    for row in rows.itertuples():
        at = _ms(row.event_timestamp)
        before = log[(log["video_id"] == row.video_id) & (log["ts_ms"] < at)]
        for col, span in (("views_1h", 3_600_000), ("views_24h", DAY_MS), ("views_7d", 7 * DAY_MS)):
            assert getattr(row, col) == before.loc[before["ts_ms"] >= at - span, "exposure"].sum()
        month = before[before["ts_ms"] >= at - 30 * DAY_MS]
        everything = log[log["ts_ms"] < at]
        prior = everything["like"].sum() / max(everything["exposure"].sum(), 1)
        expected = (month["like"].sum() + SMOOTHING * prior) / (month["exposure"].sum() + SMOOTHING)
        assert row.like_rate == pytest.approx(expected, rel=1e-4)
        item = world["items"].set_index("item_id").loc[row.video_id]
        assert (row.creator_id, row.topic) == (item["author_id"], item["category"])
        assert row.upload_ts_s == _ms(item["upload_ts"]) // 1000


def test_no_entity_before_it_exists(feats, world) -> None:  # noqa: ANN001
    videos = feats.frames["video_stats"].merge(
        world["items"][["item_id", "upload_ts"]], left_on="video_id", right_on="item_id"
    )
    first_seen = world["interactions"].groupby("item_id")["ts"].min()
    born = np.minimum(
        videos["upload_ts"],
        videos["video_id"].map(first_seen).fillna(pd.Timestamp.max.tz_localize("UTC")),
    )
    assert (videos["event_timestamp"] > born).all()


def test_user_and_pair_snapshots_recount(feats, world) -> None:  # noqa: ANN001
    follows = world["follows"]
    users = feats.frames["user_profile"].sample(40, random_state=2)
    for row in users.itertuples():
        ts = row.event_timestamp
        assert (
            row.follow_count == ((follows["user_id"] == row.user_id) & (follows["ts"] < ts)).sum()
        )
        assert row.fan_count == ((follows["author_id"] == row.user_id) & (follows["ts"] < ts)).sum()
        assert sum(row.topic_affinity) == pytest.approx(1.0, abs=1e-3)
    log = prepare_log(world["interactions"], world["items"], feats.meta["topics"])
    pairs = feats.frames["user_creator"].sample(60, random_state=3)
    for row in pairs.itertuples():
        at = _ms(row.event_timestamp)
        mine = log[(log["user_id"] == row.user_id) & (log["creator_id"] == row.creator_id)]
        mine = mine[mine["ts_ms"] < at]
        assert (row.impressions, row.clicks) == (mine["exposure"].sum(), mine["click"].sum())
        followed = (follows["user_id"] == row.user_id) & (follows["author_id"] == row.creator_id)
        assert row.has_followed == int((followed & (follows["ts"] < row.event_timestamp)).any())


def test_priors_are_as_of_each_snapshot(feats) -> None:  # noqa: ANN001
    snaps = np.asarray(feats.meta["snapshots_ms"])
    at = np.array([snaps[0] - 1, snaps[0], snaps[-1] + 10**9])
    rates = prior_defaults(feats.meta, at)["video_stats:like_rate"]
    series = feats.meta["priors"]["video_stats:like_rate"]
    assert rates[0] == 0.0  # nothing is known before the first snapshot
    assert rates[1] == pytest.approx(series[0]) and rates[2] == pytest.approx(series[-1])
    assert prior_defaults(feats.meta)["video_stats:like_rate"] == pytest.approx(series[-1])


def test_window_sums_shift_with_the_readers_clock() -> None:
    buckets = [pack([5, 1, 0, 0, 2, 7] + [1] * 54), b"", pack([3])]
    heads = [1000, 0, 990]
    now = window_sums(buckets, heads, 1000)
    assert list(now["5m"]) == [8, 0, 0] and list(now["1h"]) == [8 + 7 + 54, 0, 3]
    later = window_sums(buckets, heads, 1002)  # two minutes on, nothing new
    assert list(later["5m"]) == [5 + 1 + 0, 0, 0] and later["1h"][0] == 8 + 7 + 52
    ahead = window_sums(buckets, heads, 999)  # a head ahead of the reader counts as now
    assert ahead["5m"][0] == 8


def test_log_windows_match_minute_buckets() -> None:
    rng = np.random.default_rng(0)
    minute = 60_000
    ts = np.sort(rng.integers(0, 90 * minute, 400))
    video = rng.integers(0, 3, 400)
    idx = EventIndex(video, ts, {"n": np.ones(400)})
    at = np.array([70 * minute + 123, 89 * minute + 59_999, 10 * minute])
    got = log_window_counts(idx, "n", np.zeros(3, np.int64), at)
    for i, t in enumerate(at):
        mine = ts[(video == 0) & (ts < t)]
        start = (t // minute) * minute
        assert got["5m"][i] == (mine >= start - 4 * minute).sum()
        assert got["1h"][i] == (mine >= start - 59 * minute).sum()
    assert list(idx.last_before(np.array([0, 7]), np.array([10**9, 10**9]))) == [
        int(np.flatnonzero(video == 0)[-1]),
        -1,
    ]
