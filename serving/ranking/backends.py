"""The ranker as the feed sees it: ``await backend.score(alias, frame) -> (scores, version)``.

Two backends with one contract: :class:`LocalRanker` scores in the API process (a thread, so
the event loop keeps serving), :class:`~serving.ranking.ray_serve.RayRanker` sends the frame to
a Ray Serve deployment that micro-batches concurrent requests. Both load the model by alias
through :class:`~serving.ranking.models.AliasModels` and follow alias moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd

from serving.ranking.models import AliasModels, ModelUnavailable

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """A loaded ranker: one final score per row of raw feature columns."""

    def score(self, frame: pd.DataFrame) -> np.ndarray: ...


class RankerBackend(Protocol):
    async def score(self, alias: str, frame: pd.DataFrame) -> tuple[np.ndarray, str]: ...

    async def close(self) -> None: ...


def load_scorer(model_uri: str) -> Scorer:
    """The registered ranker behind ``model_uri`` (``training.ranker`` owns the format)."""
    from training.ranker.serving import load_ranker

    return load_ranker(model_uri)


def score_many(models: AliasModels[Scorer], requests: list[tuple[str, pd.DataFrame]],
               ) -> list[tuple[np.ndarray, str] | Exception]:
    """Score several requests with one forward pass per alias (the micro-batch). A request
    whose alias cannot be served gets its exception in place of a result, not its
    neighbours'."""
    out: list[tuple[np.ndarray, str] | Exception | None] = [None] * len(requests)
    by_alias: dict[str, list[int]] = {}
    for i, (alias, _) in enumerate(requests):
        by_alias.setdefault(alias, []).append(i)
    for alias, idx in by_alias.items():
        frames = [requests[i][1] for i in idx]
        try:
            loaded = models.get(alias)
            scores = np.asarray(loaded.model.score(
                frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)))
        except Exception as exc:
            for i in idx:
                out[i] = exc
            continue
        for i, part in zip(idx, np.split(scores, np.cumsum([len(f) for f in frames])[:-1]),
                           strict=True):
            out[i] = (part, loaded.tag)
    return out  # type: ignore[return-value]


def result(got: tuple[np.ndarray, str] | Exception) -> tuple[np.ndarray, str]:
    if isinstance(got, Exception):
        raise got
    return got


class LocalRanker:
    """The ranker in the API process."""

    def __init__(self, model_name: str, poll_s: float, warm: tuple[str, ...] = ("champion",),
                 loader: Callable[[str], Scorer] = load_scorer) -> None:
        self.models: AliasModels[Scorer] = AliasModels(model_name, loader)
        for alias in warm:
            try:
                self.models.load_now(alias)
            except ModelUnavailable as exc:
                log.warning("ranker: %s", exc)
        self.models.start(poll_s)

    async def score(self, alias: str, frame: pd.DataFrame) -> tuple[np.ndarray, str]:
        self.models.get(alias)  # raises at once when not loaded
        return result((await asyncio.to_thread(score_many, self.models, [(alias, frame)]))[0])

    async def close(self) -> None:
        self.models.stop()


__all__ = ["LocalRanker", "ModelUnavailable", "RankerBackend", "Scorer", "load_scorer",
           "result", "score_many"]
