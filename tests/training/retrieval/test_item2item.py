"""The two-tower with an interest per history item: it is content-kNN before training, it
learns from what users watch next, and it scores held-out items through their content (and
their tags)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.item_tower import ContentItemTower, ItemTowerConfig
from training.datasets.store import Dataset
from training.retrieval.baselines import ContentKNN
from training.retrieval.data import timeline
from training.retrieval.inputs import build_id_space, encode
from training.retrieval.item2item import ContentInterests, next_item_pairs, tag_ids
from training.retrieval.pipeline import Candidate, prepare, run


def _data(content: np.ndarray, timelines: list[list[int]],  # noqa: ANN202 - TrainData
          tags: list[list[str]] | None = None):
    frame = pd.DataFrame([{"user_id": u, "item_id": i, "event": "view", "ts": pd.NaT, "seq": s}
                          for u, items in enumerate(timelines) for s, i in enumerate(items)])
    rows = timeline(frame)
    items = pd.DataFrame({"item_id": np.arange(len(content))})
    if tags is not None:
        items["tags"] = tags
    ids = build_id_space(items,
                         pd.DataFrame({"user_id": np.arange(len(timelines))}), rows, content)
    return encode(ids, rows, None)


def test_pairs_are_later_items_of_the_same_user_within_the_window() -> None:
    data = _data(np.eye(6, dtype=np.float32), [[0, 1, 2], [3, 4], [5]])

    def pairs(window: int) -> list[tuple[int, int]]:
        before, after = next_item_pairs(data, window)
        return sorted(zip(before.tolist(), after.tolist(), strict=True))

    assert pairs(1) == [(0, 1), (1, 2), (3, 4)]  # never across users (2 -> 3, 4 -> 5)
    assert pairs(2) == [(0, 1), (0, 2), (1, 2), (3, 4)]


def test_tags_get_ids_when_found_on_enough_items() -> None:
    rows, vocab = tag_ids([["funny cats", "pets"], np.array(["funny cats"]), None, float("nan"),
                           ["pets", "dogs"]], min_count=2)
    names = ["funny cats", "pets"]  # sorted; "dogs": one item
    assert vocab == len(names)
    assert rows.shape == (5, 2)  # the longest row; the rest padded with the vocabulary's size
    per_item = [[names[i] for i in row if i < vocab] for row in rows.tolist()]
    assert per_item == [["funny cats", "pets"], ["funny cats"], [], [], ["pets"]]


def test_the_tower_reads_each_rows_own_tags_and_leaves_the_padding_out() -> None:
    rows, vocab = tag_ids([["a", "b"], ["a"], None, ["b"]], min_count=2)  # a: 0, b: 1
    tower = ContentItemTower(ItemTowerConfig(content_dim=4, hidden=8, vocab=vocab, token_dim=3))
    assert tower.bag is not None
    emb = tower.bag.weight.detach()
    got = tower.bag(rows[torch.tensor([3, 0, 1, 2])]).detach()  # rows picked out of order
    expected = torch.stack([emb[1], (emb[0] + emb[1]) / 2, emb[0], torch.zeros(3)])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("hashtags", [0, 4])
def test_untrained_it_scores_as_content_knn_with_max(hashtags: int) -> None:
    rng = np.random.default_rng(0)
    content = rng.normal(size=(40, 8)).astype(np.float32)
    tags = [[f"t{i % 5}", f"u{i % 3}"] for i in range(40)]
    data = _data(content, [rng.integers(0, 40, n).tolist() for n in (3, 7, 1, 12)], tags)
    model = ContentInterests(history_len=5, lr=0.0, epochs=1, hidden=16,
                             hashtags=hashtags)
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

    cand = Candidate("interests", make, [{"temperature": 0.05}, {"temperature": 0.05,
                                                                   "hashtags": 16}], seeded=True)
    out = run(cand, prep, seeds=(0, 1))
    assert 1 <= out.params["epochs"] <= 3  # chosen on validation, then refitted
    chance = 20 / len(fold.catalog)
    assert out.test["recall@20"] > 2.5 * chance
    with_tags = [m["recall@20"] for p, m in out.tuning if p.get("hashtags")]
    # The hashtag path trains and scores held-out items too (validation's catalog is half the
    # held-out items, ~100 here: chance at 20 is ~0.2, so 2x where the test fold has 2.5x).
    valid_chance = 20 / len(prep.protocol.tune.catalog)
    assert with_tags and with_tags[0] > 2 * valid_chance
    # The same seed trains the same tower.
    a, b = make(**out.params, seed=0), make(**out.params, seed=0)
    a.fit(prep.final)
    b.fit(prep.final)
    np.testing.assert_array_equal(a.vectors.numpy(), b.vectors.numpy())
