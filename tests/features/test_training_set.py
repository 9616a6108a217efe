"""Point-in-time training sets: one row per impression, nothing from after its timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from core.cli import WORKERS, app, resolve
from core.config import Settings
from features.batch import prepare_log
from features.repo import VIEW_BY_NAME
from features.schema import ITEM_COLUMNS, USER_COLUMNS
from features.store import FeatureStoreError, open_store, read_meta, repo_dir
from features.stream import run
from features.training_set import build_training_set
from training.datasets.store import write_dataset

pytestmark = pytest.mark.parametrize("store_settings", ["sqlite"], indirect=True)  # offline only


def _training_set(settings: Settings, world: dict, labels=("click", "long_view", "like")):  # noqa: ANN001, ANN202
    return build_training_set(
        open_store(settings), world["interactions"], world["items"], labels, read_meta(settings)
    )


def test_one_row_per_impression_in_order_with_labels(built: Settings, world: dict) -> None:
    frame = _training_set(built, world, ("click", "long_view", "like", "watch_ratio"))
    imp = world["interactions"][world["interactions"]["event"] == "impression"]
    assert len(frame) == len(imp)
    assert (frame["user_id"].to_numpy() == imp["user_id"].to_numpy()).all()
    assert (frame["video_id"].to_numpy() == imp["item_id"].to_numpy()).all()
    assert [c for c in frame.columns if c.startswith(("u_", "v_", "c_", "uc_", "uv_", "ctx_"))] == [
        *USER_COLUMNS,
        *ITEM_COLUMNS,
    ]
    assert (frame["label_click"].to_numpy() == imp["clicked"].to_numpy()).all()
    assert frame["label_watch_ratio"].between(0, 2).all()
    numeric = frame[[c for c in [*USER_COLUMNS, *ITEM_COLUMNS] if c != "v_topic"]]
    assert not numeric.isna().any().any(), "defaults must fill every gap"
    with pytest.raises(FeatureStoreError, match="unknown label 'clicks'"):
        _training_set(built, world, ("clicks",))


def test_real_time_columns_recount_the_log_before_each_impression(
    built: Settings, world: dict
) -> None:
    frame = _training_set(built, world)
    log = prepare_log(world["interactions"], world["items"], [])
    minute = 60_000
    for i in np.random.default_rng(4).choice(len(frame), 50, replace=False):
        row = frame.iloc[i]
        at = int(row["ts"].value // 1_000_000)
        mine = log[(log["video_id"] == row["video_id"]) & (log["ts_ms"] < at)]
        start = (at // minute) * minute
        assert (
            row["v_rt_views_5m"] == mine.loc[mine["ts_ms"] >= start - 4 * minute, "exposure"].sum()
        )
        assert (
            row["v_rt_views_1h"] == mine.loc[mine["ts_ms"] >= start - 59 * minute, "exposure"].sum()
        )


def test_a_value_written_after_an_impression_never_reaches_its_row(
    built: Settings, world: dict
) -> None:
    imp = world["interactions"][world["interactions"]["event"] == "impression"]
    imp = imp.reset_index(drop=True)
    # A user's two consecutive impressions on the last day, with a gap to write a value into.
    last_day = imp[imp["ts"] >= imp["ts"].max().floor("D")]
    user = last_day.groupby("user_id")["ts"].apply(lambda t: t.diff().max()).idxmax()
    mine = last_day[last_day["user_id"] == user]
    after = mine["ts"].diff().idxmax()
    before = mine.index[mine.index.get_loc(after) - 1]
    written_at = imp.loc[before, "ts"] + pd.Timedelta(milliseconds=1)
    assert written_at < imp.loc[after, "ts"]

    path = repo_dir(built) / VIEW_BY_NAME["user_profile"].path
    table = pq.read_table(path)
    planted = table.to_pandas()
    planted = planted[planted["user_id"] == user].sort_values("event_timestamp").iloc[[-1]]
    planted = planted.assign(event_timestamp=written_at, impressions_7d=987_654)
    extra = pa.Table.from_pandas(planted, schema=table.schema, preserve_index=False)
    pq.write_table(pa.concat_tables([table, extra]), path)

    frame = _training_set(built, world)
    assert frame.loc[before, "user_id"] == user and frame.loc[after, "user_id"] == user
    up_to_before = frame[(frame["user_id"] == user) & (frame["ts"] <= imp.loc[before, "ts"])]
    assert (up_to_before["u_impressions_7d"] != 987_654).all(), "a future value leaked"
    assert frame.loc[after, "u_impressions_7d"] == 987_654  # and it is there once written


def test_cli_builds_materializes_and_writes_a_training_set(
    store_settings: Settings, world: dict, tmp_path: Path
) -> None:
    write_dataset("tiny", world, "synth", root=store_settings.data_dir)
    runner = CliRunner()
    for args in (
        ["features", "apply"],
        ["features", "build", "--dataset", "tiny"],
        ["features", "materialize"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "rows/s" in result.output
    out = tmp_path / "train.parquet"
    result = runner.invoke(
        app,
        [
            "features",
            "training-set",
            "--dataset",
            "tiny",
            "--label",
            "click,like",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert {"label_click", "label_like", "v_views_24h"} <= set(frame.columns)
    result = runner.invoke(
        app, ["features", "training-set", "--dataset", "nope", "--out", str(out)]
    )
    assert result.exit_code == 2 and "no data set" in result.output
    result = runner.invoke(app, ["features", "get", "--user", "3", "--videos", "1,2"])
    assert result.exit_code == 0 and "v_views_7d" in result.output
    assert resolve(WORKERS["features"]) is run  # `reelrank worker features`


def test_a_row_missing_from_one_view_keeps_the_other_views(built: Settings, world: dict) -> None:
    """Feast's file store drops an entity row a view has no row for: each view is read on its
    own, so a video nobody knows (no video, creator or user x creator rows) does not cost the
    row its user profile (issue 12: on KuaiRand a joint read lost 99.7 % of the rows)."""
    inter = world["interactions"]
    imp = inter[inter["event"] == "impression"]
    row = imp[imp["ts"] >= imp["ts"].max().floor("D")].iloc[[0]]
    unknown = row.assign(item_id=10**9)
    frame = _training_set(built, {**world, "interactions": pd.concat([row, unknown])})
    user_cols = [c for c in USER_COLUMNS if c.startswith("u_")]
    assert frame.loc[0, "u_impressions_30d"] > 0, "the user has a profile snapshot"
    pd.testing.assert_series_equal(frame.loc[0, user_cols], frame.loc[1, user_cols],
                                   check_names=False)
    assert frame.loc[1, "v_creator_id"] == -1 and frame.loc[0, "v_creator_id"] >= 0
