"""Serving a ranker that reads the watch history: one request passes the user's list as a
scalar, a micro-batch of several requests one list per row, and both score alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.ranker import Ranker, RankerConfig
from serving.ranking.backends import RankRequest, to_columns
from training.ranker.bundle import RankerBundle
from training.ranker.featurizer import Featurizer
from training.ranker.history import HISTORY_COLUMN


def _bundle() -> RankerBundle:
    frame = pd.DataFrame({
        "user_id": [1, 1, 2, 2, 3, 3], "video_id": [1, 1, 2, 2, 3, 3],
        "v_creator_id": [7, 7, 8, 8, 7, 7], "v_topic_id": [0, 0, 1, 1, 1, 1],
        "v_click_rate": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        HISTORY_COLUMN: [[], [1], [1], [2, 1], [], [3]]})
    fz = Featurizer.fit(frame, ["user_id", "video_id", "v_creator_id", "v_topic_id"],
                        ["v_click_rate"], min_count=1, history_len=4)
    torch.manual_seed(0)
    cfg = RankerConfig(tasks=("click", "long_view"), cardinalities=fz.cardinalities,
                       n_numeric=1, history_len=4, history_fields=(1, 2, 3))
    return RankerBundle(Ranker(cfg).eval(), fz, {})


def _request(user: int, history: list[int], videos: list[int]) -> RankRequest:
    items = {"video_id": np.array(videos, np.int64),
             "v_creator_id": np.array([7 if v != 2 else 8 for v in videos], np.int64),
             "v_topic_id": np.array([0 if v == 1 else 1 for v in videos], np.int64),
             "v_click_rate": np.linspace(0.1, 0.5, len(videos))}
    return RankRequest(items, {"user_id": user, HISTORY_COLUMN: history})


def test_a_batch_of_requests_scores_like_each_request_alone() -> None:
    bundle = _bundle()
    a, b = _request(1, [1, 2], [1, 2, 3]), _request(2, [3], [2, 3])
    cols, scalars = to_columns([a, b])
    assert cols[HISTORY_COLUMN][0] == [1, 2] and cols[HISTORY_COLUMN][-1] == [3]
    batched = bundle.score(cols, scalars)
    alone = np.concatenate([bundle.score(*to_columns([r])) for r in (a, b)])
    assert np.allclose(batched, alone, atol=1e-6)
    # The history is read: the same candidates without it score differently.
    empty = _request(1, [], [1, 2, 3])
    assert not np.allclose(bundle.score(*to_columns([empty])), alone[:3])
    assert np.allclose(bundle.score(*to_columns([empty])),
                       bundle.score({**a.items}, {"user_id": 1}), atol=1e-6)
