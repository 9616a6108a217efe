"""The two-tower as a tunable candidate: its fit / score adapter, the data sets' defaults, the
validation search space and the candidate the pipeline tunes.

Kept apart from the pipeline so that a benchmark checkpoint (``checkpoint.TWO_TOWER_CODE``)
drops only the two-tower's fits when this changes, and keeps the baselines'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from models.two_tower import TwoTowerConfig
from training.retrieval.checkpoint import TWO_TOWER_CODE
from training.retrieval.data import Fold
from training.retrieval.inputs import TrainData
from training.retrieval.pipeline import Candidate
from training.retrieval.search import SearchSpace
from training.retrieval.trainer import TrainConfig, TrainResult, scorer, train


@dataclass
class TwoTowerRecommender:
    """The two-tower behind the same fit / score interface as the baselines."""

    model_cfg: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    name: str = "two-tower"

    @classmethod
    def make(cls, base_model: TwoTowerConfig, base_train: TrainConfig, name: str = "two-tower",
             on_epoch: Callable[[int, dict[str, float]], None] | None = None,
             **params: Any) -> TwoTowerRecommender:
        return cls(*apply_params(base_model, base_train, params), on_epoch, name)

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        self.result: TrainResult = train(data, self.model_cfg, self.train_cfg, valid,
                                         self.on_epoch)
        self._score = scorer(self.result.model, data, self.train_cfg.history_len)

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self._score(users)

    def refit_params(self) -> dict[str, Any]:
        return {"epochs": self.result.best_epoch}


def apply_params(model_cfg: TwoTowerConfig, train_cfg: TrainConfig,
                 params: dict[str, Any]) -> tuple[TwoTowerConfig, TrainConfig]:
    """Each parameter goes to whichever config has a field of that name (None: keep)."""
    params = {k: v for k, v in params.items() if v is not None}
    model_keys = {f.name for f in fields(TwoTowerConfig)}
    unknown = set(params) - model_keys - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown two-tower parameters: {sorted(unknown)}")
    return (replace(model_cfg, **{k: v for k, v in params.items() if k in model_keys}),
            replace(train_cfg, **{k: v for k, v in params.items() if k not in model_keys}))


# Where tuning starts when it does not run (``train retrieval`` without ``--tune``); the
# benchmark and ``--tune`` search history length and the positive definition on validation.
TWO_TOWER_DEFAULTS: dict[str, dict[str, Any]] = {
    "kuairand": {"strong_targets": True, "history_len": 100},
}
_TEMPERATURES = [0.05, 0.1]
_TEMPERATURE_BOUNDS = {"temperature": (0.01, 0.5)}


def tuning_grid(protocol: str, kind: str | None = None) -> SearchSpace:
    """What tuning searches on validation (``--tune`` and the benchmark); validation also
    decides the epochs. For held-out items what matters most is how often training hides the
    id, so the content path has to carry the item on its own."""
    if protocol == "cold-item":
        # the residual id path adds a held-out item's shared OOV row to its vector; the
        # content residual scores by content from the first step, and the id rows' learning
        # rate decides how far training pulls the towers from it (prototype on 4k MicroLens
        # users: 1.0 over 10 with it). Both start where the search did without them (off, 10).
        return SearchSpace({"temperature": _TEMPERATURES, "id_dropout": [0.1, 0.3, 0.5],
                            "residual": [True, False], "content_residual": [False, True],
                            "item_oov": [True, False],
                            "embedding_lr_scale": [3.0, 10.0, 30.0]},
                           joint=("temperature",),
                           bounds={"id_dropout": (0.02, 0.9), "embedding_lr_scale": (0.1, 100.0),
                                   **_TEMPERATURE_BOUNDS})
    axes: dict[str, list[Any]] = {"temperature": _TEMPERATURES, "user_id": [False, True],
                                  "history_len": [25, 50, 100],
                                  "user_tower": ["pooled", "sequential"],
                                  "random_negatives": [0, 256],  # in-batch (+ uniform)
                                  # a new upload's id: a hashed OOV row, or nothing (features)
                                  "item_oov": [True, False]}
    if kind == "kuairand":  # long timelines; train on every positive or only strong ones
        axes.update(history_len=[50, 100, 200], strong_targets=[False, True])
    else:  # titles: content on both sides of the score, or only in the item head
        axes.update(content_residual=[False, True])
    return SearchSpace(axes, joint=("temperature",),
                       bounds={"history_len": (5, 400), **_TEMPERATURE_BOUNDS})


def two_tower_configs(kind: str, **params: Any) -> tuple[TwoTowerConfig, TrainConfig]:
    """The data set's defaults, then ``params`` (None values ignored) on top."""
    return apply_params(TwoTowerConfig(), TrainConfig(),
                        {**TWO_TOWER_DEFAULTS.get(kind, {}), **params})



VARIANTS = {"content": True, "id": False}  # two-tower item tower: id + content/features, id only


def variant_name(variant: str, has_content: bool = True) -> str:
    """The row name says what the item tower reads: KuaiRand has no titles, so its feature
    tower reads author, tags and numbers but no content."""
    if not VARIANTS[variant]:
        return "two-tower (id only)"
    return "two-tower (id + content)" if has_content else "two-tower (id + item features)"


def two_tower_candidate(
    variant: str = "content",
    model_cfg: TwoTowerConfig | None = None,
    train_cfg: TrainConfig | None = None,
    grid: list[dict[str, Any]] | SearchSpace | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    has_content: bool = True,
) -> Candidate:
    if variant not in VARIANTS:
        raise ValueError(f"unknown two-tower variant {variant!r} (use {'|'.join(VARIANTS)})")
    base = replace(model_cfg or TwoTowerConfig(), item_features=VARIANTS[variant])
    name = variant_name(variant, has_content)
    if not VARIANTS[variant] and isinstance(grid, SearchSpace):  # nothing but the id: no id
        # dropout, no content, nothing but the OOV rows for an unseen item
        grid = replace(grid, axes={k: v for k, v in grid.axes.items()
                                   if k not in ("id_dropout", "content_residual",
                                                "item_oov")})

    def make(**params: Any) -> TwoTowerRecommender:
        if not VARIANTS[variant]:  # nothing but the id to fall back on: never hide it
            params = {**params, "id_dropout": 0.0}
        return TwoTowerRecommender.make(base, train_cfg or TrainConfig(), name, on_epoch,
                                        **params)

    return Candidate(name, make, grid or [{}], seeded=True, code=TWO_TOWER_CODE)


