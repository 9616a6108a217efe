"""Timelines, splits and the one evaluation function, on frames small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.dataset_schema import DataError
from training.retrieval.data import cold_items, leave_last_out, temporal, timeline
from training.retrieval.inputs import build_id_space, encode
from training.retrieval.metrics import evaluate

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def impressions(rows: list[tuple[int, int, int, bool, bool, bool]]) -> pd.DataFrame:
    """(user, item, hour, clicked, long_view, liked) -> canonical impression rows."""
    u, i, h, c, lv, lk = zip(*rows, strict=True)
    return pd.DataFrame({
        "user_id": u, "item_id": i, "ts": [T0 + pd.Timedelta(hours=x) for x in h],
        "event": "impression", "clicked": c, "long_view": lv, "liked": lk,
    })


def test_timeline_keeps_consumption_orders_history_first_and_flags_positives() -> None:
    log = impressions([
        (1, 10, 5, True, True, False),   # positive
        (1, 11, 1, False, False, False),  # shown, not clicked: a negative, dropped
        (1, 12, 3, True, False, False),  # clicked only: context, not a positive
        (1, 13, 4, False, False, True),  # liked without click: positive
        (1, 10, 9, True, False, False),  # repeat of 10: merged into the first
    ])
    history = pd.DataFrame({"user_id": [1, 1], "item_id": [20, 21], "ts": pd.NaT,
                            "event": ["view", "view"], "seq": [1, 0]})
    rows = timeline(log, history)
    assert rows["item_id"].tolist() == [21, 20, 12, 13, 10]
    assert rows.set_index("item_id")["positive"].to_dict() == {
        21: True, 20: True, 12: False, 13: True, 10: True}
    with pytest.raises(DataError, match="event"):
        timeline(log.drop(columns="event"))


def test_temporal_split_never_trains_on_the_future() -> None:
    log = impressions([(u, i, h, True, True, False) for u in range(3) for i, h in
                       [(1, 1), (2, 20), (3, 30), (4, 50), (5, 60)]])
    p = temporal(timeline(log), T0 + pd.Timedelta(hours=48), valid_days=1)
    end_ms, valid_ms = (T0 + pd.Timedelta(hours=48)).value / 1e6, (T0 + pd.Timedelta(hours=24)
                                                                   ).value / 1e6
    assert (p.final.train["ts"] < end_ms).all() and (p.final.test["ts"] >= end_ms).all()
    assert (p.tune.train["ts"] < valid_ms).all()
    assert set(p.tune.test["item_id"]) == {3} and set(p.final.test["item_id"]) == {4, 5}


def test_leave_last_out_and_cold_items() -> None:
    rows = timeline(pd.DataFrame({"user_id": [1] * 4 + [2] * 2, "item_id": [5, 6, 7, 8, 5, 6],
                                  "ts": pd.NaT, "event": "view", "seq": [0, 1, 2, 3, 0, 1]}))
    p = leave_last_out(rows)
    assert p.final.test["item_id"].tolist() == [8] and p.tune.test["item_id"].tolist() == [7]
    assert len(p.final.train) == 5 and len(p.tune.train) == 4  # user 2 is too short to split

    many = timeline(pd.DataFrame({"user_id": np.repeat(np.arange(20), 10),
                                  "item_id": np.tile(np.arange(10), 20), "ts": pd.NaT,
                                  "event": "view", "seq": np.tile(np.arange(10), 20)}))
    c = cold_items(many, fraction=0.4)
    held = set(c.tune.catalog) | set(c.final.catalog)
    assert len(held) == 4 and not held & set(c.final.train["item_id"])
    assert set(c.final.test["item_id"]) <= set(c.final.catalog)


def test_evaluate_excludes_training_items_and_computes_metrics_by_hand() -> None:
    train = timeline(impressions([(1, 1, 0, True, True, False), (2, 2, 0, True, True, False)]))
    test = timeline(impressions([(1, 3, 9, True, True, False), (1, 1, 9, True, True, False),
                                 (2, 4, 9, True, True, False), (2, 5, 9, True, True, False)]))
    items = pd.DataFrame({"item_id": np.arange(1, 6)})
    cat = build_id_space(items, pd.DataFrame({"user_id": [1, 2]}), pd.concat([train, test]), None)
    data = encode(cat, train, None)
    from training.retrieval.data import Fold

    fold = Fold("test", train, test)
    # Scores put each user's own training item first: it must be skipped, not counted.
    table = np.array([[9, 0, 8, 1, 0], [7.5, 9, 0, 8, 7]], np.float32)  # items 1..5
    out = evaluate(lambda u: table[u], data, fold)
    # user 1: target {3} (item 1 was seen, so not a target) ranked 1st: recall 1, NDCG 1.
    # user 2: targets {4, 5} ranked 1st and 3rd (item 1 is 2nd): NDCG = 1.5 / (1 + 1/log2 3).
    assert out["users"] == 2 and out["recall@20"] == 1.0 and out["hit@50"] == 1.0
    assert out["ndcg@10"] == pytest.approx((1 + 1.5 / (1 + 1 / np.log2(3))) / 2)
    assert out["coverage@50"] == 1.0
    assert out["cold_recall@50"] == 1.0  # items 3, 4, 5 were never in training
    worst = evaluate(lambda u: -table[u], data, fold)
    assert worst["ndcg@10"] < 0.7 and worst["recall@20"] == 1.0  # five items: all in top 20
