"""The two-tower with an interest per history item: it is content-kNN before training, it
learns from what users watch next, and it scores held-out items through their content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.datasets.store import Dataset
from training.retrieval.baselines import ContentKNN
from training.retrieval.data import timeline
from training.retrieval.inputs import build_id_space, encode
from training.retrieval.item2item import ContentInterests, next_item_pairs
from training.retrieval.pipeline import Candidate, prepare, run


def _data(content: np.ndarray, timelines: list[list[int]]):  # noqa: ANN202 - TrainData
    frame = pd.DataFrame([{"user_id": u, "item_id": i, "event": "view", "ts": pd.NaT, "seq": s}
                          for u, items in enumerate(timelines) for s, i in enumerate(items)])
    rows = timeline(frame)
    ids = build_id_space(pd.DataFrame({"item_id": np.arange(len(content))}),
                         pd.DataFrame({"user_id": np.arange(len(timelines))}), rows, content)
    return encode(ids, rows, None)


def test_pairs_are_later_items_of_the_same_user_within_the_window() -> None:
    data = _data(np.eye(6, dtype=np.float32), [[0, 1, 2], [3, 4], [5]])

    def pairs(window: int) -> list[tuple[int, int]]:
        before, after = next_item_pairs(data, window)
        return sorted(zip(before.tolist(), after.tolist(), strict=True))

    assert pairs(1) == [(0, 1), (1, 2), (3, 4)]  # never across users (2 -> 3, 4 -> 5)
    assert pairs(2) == [(0, 1), (0, 2), (1, 2), (3, 4)]


def test_untrained_it_scores_as_content_knn_with_max() -> None:
    rng = np.random.default_rng(0)
    content = rng.normal(size=(40, 8)).astype(np.float32)
    data = _data(content, [rng.integers(0, 40, n).tolist() for n in (3, 7, 1, 12)])
    model = ContentInterests(history_len=5, lr=0.0, epochs=1, hidden=16)
    model.fit(data)
    knn = ContentKNN(history_len=5, aggregate="max")
    knn.fit(data)
    users = np.arange(4)
    np.testing.assert_allclose(model.score(users), knn.score(users), atol=1e-5)


def test_held_out_items_are_found_through_content(world: Dataset, tmp_path: Path) -> None:
    prep = prepare(world, "synth", protocol="cold-item", content=True, cache_dir=tmp_path)
    fold = prep.protocol.final
    trained = set(prep.final.ids.item_ids[np.unique(prep.final.item)])
    assert not trained & set(fold.catalog)  # scored items were never trained on

    def make(**params: object) -> ContentInterests:
        return ContentInterests(max_epochs=3, hidden=64, **params)  # type: ignore[arg-type]

    cand = Candidate("interests", make, [{"temperature": 0.05}], seeded=True)
    out = run(cand, prep, seeds=(0, 1))
    assert 1 <= out.params["epochs"] <= 3  # chosen on validation, then refitted
    chance = 20 / len(fold.catalog)
    assert out.test["recall@20"] > 2.5 * chance
    # The same seed trains the same tower.
    a, b = make(**out.params, seed=0), make(**out.params, seed=0)
    a.fit(prep.final)
    b.fit(prep.final)
    np.testing.assert_array_equal(a.vectors.numpy(), b.vectors.numpy())
