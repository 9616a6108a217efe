"""The trained ranker as one object: load it by model URI, score candidates in a few ms.

Serving, ``reelrank rank`` and the benchmark all go through :class:`RankerBundle`::

    ranker = load_ranker("models:/reelrank-ranker@champion")   # or a bundle directory
    scores = ranker.score(frame)                                # [N] final scores
    scores, probs = ranker.predict(feats.items, feats.user, {"ctx_tab": 1})
    probs["click"], probs["long_view"], ...                     # [N] per task

``frame`` / ``candidates`` is a DataFrame with one row per candidate and raw feature columns
as the feature store names them (``features.schema``: ``video_id``, ``v_*``, ``c_*``, ``uc_*``,
``uv_*``; a ``video_id`` index, as ``FeatureReader.get`` returns, counts as the column).
``user_features`` and ``context`` are scalars for all rows (``user_id``, ``u_*``, ``ctx_hour``,
``ctx_weekday``, ``ctx_tab``; context wins over user features, both over candidate columns).
A model with target attention also reads the user's watch history, ``u_last_watched`` (video
ids, newest first, as the online store's ``user_realtime:last_watched``) from the user
features (or one list per row, as a column); without it the history is empty.
Missing columns are unknown: ids get the learned "unknown" embedding, numbers the training
mean, so a new user or a brand-new video is scored, not refused. ``predict`` returns each
task's probability (``watch_ratio``: the expected ratio) and the final score, the weighted
sum of the task predictions with the weights in the model's config.

One request of 500 candidates takes a few milliseconds on one CPU core: one vectorised
encoding pass and one forward pass (``benchmarks/results/ranker.md``).

In the registry (:mod:`training.registry`) the ranker is ``reelrank-ranker``, a pyfunc
(:class:`RankerPyfunc`) whose input is a frame of raw feature columns (one row per candidate, as
in the point-in-time training set), whose output is the final ``score`` and one column per task
(:func:`output_frame`), and whose artifact is the bundle directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature

from models.ranker import Ranker, RankerConfig, inference_dtype
from training import registry
from training.ranker.featurizer import Featurizer
from training.ranker.history import HISTORY_COLUMN
from training.ranker.metrics import platt

MODEL_NAME = registry.MODELS["ranker"]
EXPERIMENT = MODEL_NAME


@dataclass
class RankerBundle:
    """The network, the featurizer that feeds it, and what it was trained on (``meta``)."""

    model: Ranker
    featurizer: Featurizer
    meta: dict[str, Any]

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.model.cfg.tasks

    @property
    def columns(self) -> list[str]:
        """The raw feature columns the model reads."""
        return [*self.featurizer.categorical, *self.featurizer.numeric]

    @torch.no_grad()
    def predict(
        self,
        candidates: pd.DataFrame | Mapping[str, np.ndarray],
        user_features: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(scores [N], {task: predictions [N]})`` for the candidates (see module doc); a
        mapping of equal-length column arrays works like a frame (serving passes one)."""
        if isinstance(candidates, pd.DataFrame) and "video_id" not in candidates \
                and candidates.index.name == "video_id":
            candidates = candidates.reset_index()
        scalars = {**(user_features or {}), **(context or {})}
        cat, num = self.featurizer.encode(candidates, scalars)
        x = [torch.from_numpy(cat), torch.from_numpy(num)]
        if self.featurizer.history_len:  # the user's list, or one list per candidate row
            watched = scalars.get(HISTORY_COLUMN)
            if watched is None and HISTORY_COLUMN in candidates:
                watched = candidates[HISTORY_COLUMN]
            x.append(torch.from_numpy(self.featurizer.encode_history(watched, len(cat))))
        score, preds = self.model.predict(*x)
        per_task = {t: preds[:, j].numpy() for j, t in enumerate(self.tasks)}
        calibrated = self.meta.get("calibration") or {}
        if not calibrated:
            return score.numpy(), per_task
        # Tasks calibrated on validation (training.ranker.selection): the score is the same
        # weighted sum, of the calibrated probabilities.
        per_task |= {t: platt(ab, per_task[t]) for t, ab in calibrated.items() if t in per_task}
        weights = self.model.cfg.score_weights
        score = sum((weights.get(t, 0.0) * p for t, p in per_task.items()),
                    np.zeros(len(cat), np.float32))
        return np.asarray(score, np.float32), per_task

    def score(self, frame: pd.DataFrame | Mapping[str, np.ndarray],
              user_features: Mapping[str, Any] | None = None,
              context: Mapping[str, Any] | None = None, *,
              weights: Mapping[str, float] | None = None) -> np.ndarray:
        """The final score per row (the feed's ranker contract); ``weights`` replace the
        config's weights of the tasks they name (an experiment's variant)."""
        scores, per_task = self.predict(frame, user_features, context)
        if not weights:
            return scores
        w = {**self.model.cfg.score_weights, **weights}
        return sum((w.get(t, 0.0) * p for t, p in per_task.items()), np.zeros(len(scores)))

    def to_precision(self, precision: str) -> RankerBundle:
        """The network cast for serving (``models.ranker.inference_dtype``: ``auto``,
        ``float32`` or ``bfloat16``); inputs and outputs stay float32. Scoring only: a
        bfloat16 copy is not for training."""
        self.model.to(inference_dtype(precision))
        return self

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / "model.pt")
        config = {"model": asdict(self.model.cfg), "featurizer": self.featurizer.to_dict(),
                  "meta": self.meta}
        (path / "config.json").write_text(json.dumps(config, default=str))
        return path

    @classmethod
    def load(cls, path: Path) -> RankerBundle:
        config = json.loads((Path(path) / "config.json").read_text())
        model = Ranker(RankerConfig(**config["model"]))
        model.load_state_dict(torch.load(Path(path) / "model.pt", weights_only=True))
        model.eval()
        return cls(model, Featurizer.from_dict(config["featurizer"]), config["meta"])


def output_frame(bundle: RankerBundle, scores: Any, preds: dict[str, Any]) -> pd.DataFrame:
    """``score`` then ``p_<task>`` per binary task and ``<task>`` per ratio task."""
    ratio = set(bundle.model.cfg.ratio_tasks)
    cols = {"score": scores} | {t if t in ratio else f"p_{t}": v for t, v in preds.items()}
    return pd.DataFrame(cols)


class RankerPyfunc(registry.BundlePyfunc):
    """``predict(frame of feature columns)`` -> score and per-task predictions per row."""

    bundle_type = RankerBundle

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return output_frame(self.bundle, *self.bundle.predict(model_input))


def log_bundle(bundle: RankerBundle, example: pd.DataFrame) -> str:
    """Log the model (signature from ``example`` rows of the training frame); its URI."""
    example = example[[c for c in bundle.columns if c in example]].head(5).reset_index(drop=True)
    # Numbers as doubles: a missing value (NaN) must pass the signature, it means "unknown".
    example = example.astype({c: "float64" for c in bundle.featurizer.numeric if c in example})
    output = output_frame(bundle, *bundle.predict(example))
    with registry.without_inapplicable_advice():
        signature = infer_signature(example, output)
    return registry.log_bundle(bundle, RankerPyfunc(), signature, example)


def load_ranker(model_uri: str | Path, precision: str = "float32") -> RankerBundle:
    """A bundle from ``models:/reelrank-ranker@alias`` (or ``/VERSION``) or a bundle dir, in
    ``precision`` (:meth:`RankerBundle.to_precision`); for a model URI the tracking URI must be
    set (:func:`training.registry.connect`)."""
    if not str(model_uri).startswith("models:/"):
        bundle = RankerBundle.load(Path(model_uri))
    else:
        bundle = registry.load_bundle(str(model_uri), RankerBundle)[0]
    return bundle.to_precision(precision)
