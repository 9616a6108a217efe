"""What the feed takes from a variant: score weights reach the ranker (per request, batched
apart from other weights), the list remembers its arms across pages, and each arm gets its
exposure."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import redis

from experiments.assignment import Arm, Assignment
from serving.feed import page_cache
from serving.ranking.backends import RankRequest, score_many
from serving.ranking.models import AliasModels, Loaded


class TwoTasks:
    """A scorer with two 'tasks' whose final score is their weighted sum."""

    weights = {"click": 1.0, "like": 0.0}

    def score(self, columns: Mapping[str, np.ndarray], user: Mapping | None = None, *,
              weights: dict[str, float] | None = None) -> np.ndarray:
        w = {**self.weights, **(weights or {})}
        return w["click"] * np.asarray(columns["a"]) + w["like"] * np.asarray(columns["b"])


def test_score_weights_reach_the_ranker_per_request() -> None:
    models: AliasModels = AliasModels("ranker", lambda uri: TwoTasks())
    models._loaded["champion"] = Loaded(TwoTasks(), "ranker", "1")
    items = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    plain, liked = RankRequest(items), RankRequest(items, weights={"like": 5.0})
    got = score_many(models, [("champion", plain), ("champion", liked), ("champion", plain)])
    assert [list(g[0]) for g in got] == [[1.0, 0.0], [1.0, 5.0], [1.0, 0.0]]


def test_ranked_list_keeps_its_arms(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    arms = (("exp-a", "treatment"), ("exp-b", "control"))
    ranked = page_cache.RankedList(7, np.array([3, 4]), np.array([0, 1], np.uint8), "m/1",
                                   "treatment", "exp-a", ("ranker",), arms=arms)
    page_cache.write(r, 7, np.zeros(0, np.int64), 0, 0, ("list-1", ranked, 60))
    back = page_cache.load(r, "list-1")
    assert back is not None and back.arms == arms and back.degraded == ("ranker",)


def test_assignment_exposes_first_arm_for_old_callers() -> None:
    a = Assignment(arms=(Arm("e", "v"), Arm("f", "w")), ranker_alias="challenger")
    assert (a.experiment, a.variant, a.ranker_alias) == ("e", "v", "challenger")
    assert Assignment().experiment is None and Assignment().ranker_alias == "champion"
