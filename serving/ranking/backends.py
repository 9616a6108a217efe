"""The ranker as the feed sees it: ``await backend.score(alias, request) -> (scores, version)``.

Two backends with one contract: :class:`LocalRanker` scores in the API process (a thread, so
the event loop keeps serving), :class:`~serving.ranking.ray_serve.RayRanker` sends the request
to a Ray Serve deployment that micro-batches concurrent requests. Both load the model by alias
through :class:`~serving.ranking.models.AliasModels` and follow alias moves.

A :class:`RankRequest` is columnar: numpy arrays per candidate column plus the user's scalars
once. Ray ships numpy buffers without pickling them element by element, and requests with the
same columns are concatenated column by column into one frame, one forward pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from serving.ranking.models import AliasModels, ModelUnavailable


@dataclass
class RankRequest:
    """One user's candidates: ``items`` column -> array (one row per candidate), ``user``
    column -> scalar (the same for every row)."""

    items: dict[str, np.ndarray]
    user: dict[str, Any] = field(default_factory=dict)
    # Task weights of the final score that differ from the model's (an experiment's variant).
    weights: Mapping[str, float] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.items.values()))) if self.items else 0

    def columns(self) -> tuple[str, ...]:
        return (*self.items, *self.user)


def to_frame(requests: list[RankRequest]) -> pd.DataFrame:
    """Rows of all ``requests`` (same columns), user scalars repeated per row."""
    cols: dict[str, np.ndarray] = {}
    for c in requests[0].items:
        parts = [r.items[c] for r in requests]
        cols[c] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    for c in requests[0].user:
        parts = [np.full(len(r), r.user[c]) for r in requests]
        cols[c] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return pd.DataFrame(cols, copy=False)


class Scorer(Protocol):
    """A loaded ranker: one final score per row of raw feature columns."""

    def score(self, frame: pd.DataFrame, *, weights: Mapping[str, float] | None = None,
              ) -> np.ndarray: ...


class RankerBackend(Protocol):
    async def score(self, alias: str, request: RankRequest) -> tuple[np.ndarray, str]: ...

    async def close(self) -> None: ...


def load_scorer(model_uri: str) -> Scorer:
    """The registered ranker behind ``model_uri`` (``training.ranker`` owns the format)."""
    from training.ranker.bundle import load_ranker

    return load_ranker(model_uri)


Result = tuple[np.ndarray, str] | Exception


def score_many(models: AliasModels[Scorer], requests: list[tuple[str, RankRequest]],
               ) -> list[Result]:
    """Score several requests with one forward pass per alias and column set (the
    micro-batch). A request whose alias cannot be served gets its exception in place of a
    result, not its neighbours'."""
    out: list[Result | None] = [None] * len(requests)
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, (alias, req) in enumerate(requests):
        weights = tuple(sorted(req.weights.items())) if req.weights else ()
        groups.setdefault((alias, req.columns(), weights), []).append(i)
    for (alias, _, weights), idx in groups.items():
        reqs = [requests[i][1] for i in idx]
        try:
            loaded = models.get(alias)
            frame = to_frame(reqs)
            scores = np.asarray(loaded.model.score(frame, weights=dict(weights)) if weights
                                else loaded.model.score(frame))
        except Exception as exc:
            for i in idx:
                out[i] = exc
            continue
        for i, part in zip(idx, np.split(scores, np.cumsum([len(r) for r in reqs])[:-1]),
                           strict=True):
            out[i] = (part, loaded.tag)
    return out  # type: ignore[return-value]


def result(got: Result) -> tuple[np.ndarray, str]:
    if isinstance(got, Exception):
        raise got
    return got


class LocalRanker:
    """The ranker in the API process."""

    def __init__(self, model_name: str, poll_s: float, warm: tuple[str, ...] = ("champion",),
                 loader: Callable[[str], Scorer] = load_scorer) -> None:
        self.models: AliasModels[Scorer] = AliasModels.started(model_name, loader, poll_s, warm,
                                                               owner="ranker")

    async def score(self, alias: str, request: RankRequest) -> tuple[np.ndarray, str]:
        self.models.get(alias)  # raises at once when not loaded
        return result((await asyncio.to_thread(score_many, self.models,
                                               [(alias, request)]))[0])

    async def close(self) -> None:
        self.models.stop()


__all__ = ["LocalRanker", "ModelUnavailable", "RankRequest", "RankerBackend", "Scorer",
           "load_scorer", "result", "score_many"]
