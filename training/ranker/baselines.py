"""The GBDT baseline: one LightGBM model per task on exactly the ranker's encoded features.

Categorical fields go in as LightGBM categorical features (their vocabulary indices), numeric
ones as they are, so the comparison with the neural ranker is about the model, not the inputs.
Like the ranker, it picks its number of trees on validation and is then refitted on all the
training data with that count. Ratio tasks use LightGBM's cross-entropy objective on
``min(y, cap) / cap``, the same soft label the ranker learns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from training.ranker.data import RATIO_TASKS, Encoded

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 20.0,
    "cat_l2": 10.0,
    "min_data_per_group": 50,
    "max_cat_threshold": 64,
    "verbosity": -1,
}


def _matrix(data: Encoded) -> np.ndarray:
    return np.hstack([data.categorical.astype(np.float32), data.numeric])


@dataclass
class LightGBMRanker:
    """``fit`` per task, then ``predict`` -> [N, tasks] like the neural ranker."""

    tasks: list[str]
    ratio_cap: float = 2.0
    max_rounds: int = 1000
    threads: int = 2
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    task_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task, on top
    boosters: dict[str, lgb.Booster] = field(default_factory=dict)
    best_rounds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def _dataset(self, data: Encoded, j: int, reference: lgb.Dataset | None = None
                 ) -> lgb.Dataset:
        y = data.labels[:, j].astype(np.float64)
        keep = ~np.isnan(y)
        if self.tasks[j] in RATIO_TASKS:
            y = np.clip(y, 0, self.ratio_cap) / self.ratio_cap
        cats = list(range(data.categorical.shape[1]))
        return lgb.Dataset(_matrix(data)[keep], y[keep], categorical_feature=cats,
                           reference=reference, free_raw_data=False)

    def _params(self, task: str) -> dict[str, Any]:
        objective = "cross_entropy" if task in RATIO_TASKS else "binary"
        return {**PARAMS, **self.params, **self.task_params.get(task, {}),
                "objective": objective, "num_threads": self.threads,
                "seed": self.seed}

    def fit(self, train: Encoded, valid: Encoded | None = None,
            rounds: dict[str, int] | None = None) -> LightGBMRanker:
        """Early-stop each task on ``valid``, or train exactly ``rounds[task]`` trees."""
        started = time.perf_counter()
        for j, task in enumerate(self.tasks):
            dtrain = self._dataset(train, j)
            if valid is not None:
                dvalid = self._dataset(valid, j, reference=dtrain)
                booster = lgb.train(
                    self._params(task), dtrain, self.max_rounds, valid_sets=[dvalid],
                    callbacks=[lgb.early_stopping(30, verbose=False)],
                )
                self.best_rounds[task] = max(booster.best_iteration, 1)
            else:
                n = (rounds or self.best_rounds).get(task, 200)
                booster = lgb.train(self._params(task), dtrain, n)
                self.best_rounds[task] = n
            self.boosters[task] = booster
        self.seconds = time.perf_counter() - started
        return self

    def predict(self, data: Encoded) -> np.ndarray:
        x = _matrix(data)
        out = np.zeros((len(data), len(self.tasks)), np.float32)
        for j, task in enumerate(self.tasks):
            b = self.boosters[task]
            p = b.predict(x, num_iteration=self.best_rounds.get(task) or None)
            out[:, j] = p * (self.ratio_cap if task in RATIO_TASKS else 1.0)
        return out
