"""Baselines recover structure planted in tiny data, and popularity respects its window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.retrieval.baselines import ALS, EASE, ItemKNN, Popularity, RandomScores
from training.retrieval.data import timeline
from training.retrieval.inputs import build_id_space, encode

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def planted(seed: int = 0) -> tuple:
    """60 users; item pairs (2k, 2k+1) are always consumed together, plus random noise items.
    User 0 consumed only item 0, so item 1 is the one thing the co-occurrence says to show."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, 60):
        pairs = rng.choice(10, 2, replace=False)
        picked = [2 * p for p in pairs] + [2 * p + 1 for p in pairs] + [20 + rng.integers(10)]
        users += [u] * len(picked)
        items += picked
    users.append(0)
    items.append(0)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "event": "view", "ts": pd.NaT,
                          "seq": np.arange(len(users))})
    rows = timeline(frame)
    cat = build_id_space(pd.DataFrame({"item_id": np.arange(30)}),
                        pd.DataFrame({"user_id": np.arange(60)}), rows, None)
    return cat, encode(cat, rows, None)


@pytest.mark.parametrize("model", [EASE(l2=5.0), ItemKNN(neighbors=5, shrink=0.0),
                                   ALS(factors=16, regularization=0.01, alpha=10.0, threads=1)])
def test_recovers_planted_co_occurrence(model) -> None:
    cat, data = planted()
    model.fit(data)
    user0 = cat.user_index(np.array([0]))
    scores = np.asarray(model.score(user0))[0].copy()
    scores[cat.item_index(np.array([0]))] = -np.inf  # its own item
    assert cat.item_ids[int(np.argmax(scores))] == 1
    # A random scorer on the same data does not (it would by chance 1 time in 29).
    rnd = RandomScores(seed=1)
    rnd.fit(data)
    assert cat.item_ids[int(np.argmax(rnd.score(user0)[0][1:])) + 1] != 1


def test_recent_popularity_counts_only_the_window() -> None:
    rows = []
    for u in range(10):  # item 1: popular long ago; item 2: popular in the last day
        rows.append((u, 1, T0))
        if u < 4:
            rows.append((u, 2, T0 + pd.Timedelta(days=9, hours=12)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]).assign(event="view")
    tl = timeline(frame)
    cat = build_id_space(pd.DataFrame({"item_id": [1, 2, 3]}), pd.DataFrame({"user_id": range(10)}),
                        tl, None)
    data = encode(cat, tl, T0 + pd.Timedelta(days=10))
    recent, ever = Popularity(window_days=1.0), Popularity(window_days=None)
    recent.fit(data)
    ever.fit(data)
    ids = cat.item_ids
    assert ids[np.argmax(recent.score(np.array([0]))[0])] == 2
    assert ids[np.argmax(ever.score(np.array([0]))[0])] == 1
