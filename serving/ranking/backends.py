"""The ranker as the feed sees it: ``backend.submit(alias, request, timeout_s)`` -> a future of
``(scores, version)``, from the request's worker thread; ``backend.send()`` sends what is
queued.

Two backends with one contract: :class:`LocalRanker` scores in the API process on the
caller's thread (the baseline; its future is done when returned, nothing is ever queued),
:class:`~serving.ranking.ray_serve.RayRanker` queues the request for one call to a Ray Serve
deployment with the process's next first pages. Both load the model
by alias through :class:`~serving.ranking.models.AliasModels` and follow alias moves.

A :class:`RankRequest` is columnar: one numpy array per candidate column plus the user's
scalars once, from the feature read to the model's input, with no DataFrame in between. Ray
ships numpy buffers without pickling them element by element, and requests with the same
columns are concatenated column by column into one batch, one forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

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

    def __getstate__(self) -> dict[str, Any]:
        """On the wire (to a Ray replica) the numeric columns travel as two matrices, one
        float64 and one int64, instead of ~40 arrays each serialized on its own."""
        groups: dict[str, list[str]] = {"f": [], "i": [], "o": []}
        for c, v in self.items.items():
            kind = v.dtype.kind
            groups["f" if kind == "f" else "i" if kind in "iub" else "o"].append(c)
        return {"user": self.user, "weights": self.weights, "names": groups,
                "f": _stack(self.items, groups["f"], np.float64),
                "i": _stack(self.items, groups["i"], np.int64),
                "o": {c: self.items[c] for c in groups["o"]}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        items: dict[str, np.ndarray] = {}
        for kind in ("f", "i"):
            for j, c in enumerate(state["names"][kind]):
                items[c] = state[kind][j]
        items |= state["o"]
        self.items = {c: items[c] for c in (*state["names"]["f"], *state["names"]["i"],
                                            *state["names"]["o"]) if c in items}
        self.user = state["user"]
        self.weights = state["weights"]


def _stack(items: dict[str, np.ndarray], names: list[str], dtype: type) -> np.ndarray:
    """Columns ``names`` as rows of one contiguous matrix (row j: column names[j])."""
    if not names:
        return np.zeros((0, 0), dtype)
    return np.stack([np.asarray(items[c], dtype) for c in names])


def to_columns(requests: list[RankRequest]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(columns, scalars)`` of all ``requests`` (same columns): one request keeps its user
    values as scalars; several get them repeated per row."""
    if len(requests) == 1:
        return requests[0].items, requests[0].user
    cols = {c: np.concatenate([r.items[c] for r in requests]) for c in requests[0].items}
    for c in requests[0].user:
        cols[c] = np.concatenate([_repeat(r.user[c], len(r)) for r in requests])
    return cols, {}


def _repeat(value: Any, n: int) -> np.ndarray:
    """A user value on each of ``n`` rows; a list (the watch history the ranker's attention
    reads) stays one list per row, an object column, instead of being broadcast."""
    if np.ndim(value) == 0:
        return np.full(n, value)
    out = np.empty(n, object)
    out.fill(list(value))
    return out


class Scorer(Protocol):
    """A loaded ranker: one final score per row of raw feature columns."""

    def score(self, columns: Mapping[str, Any], user_features: Mapping[str, Any] | None = None,
              *, weights: Mapping[str, float] | None = None) -> np.ndarray: ...


Ranked = tuple[np.ndarray, str]  # scores, "name/version" of the model that gave them


class RankerBackend(Protocol):
    def submit(self, alias: str, request: RankRequest, timeout_s: float) -> Future[Ranked]:
        """Scores of ``request`` by the model behind ``alias``: done, or queued for
        :meth:`send`, which gives the ranker ``timeout_s``."""
        ...

    def send(self) -> None:
        """What is queued, scored; returns when every future of it is done."""
        ...

    @property
    def batch_full(self) -> bool:
        """As many requests queued as one call takes."""
        ...

    async def close(self) -> None: ...


def load_scorer(model_uri: str, precision: str) -> Scorer:
    """The registered ranker behind ``model_uri`` (``training.ranker`` owns the format), in
    ``precision``: the ``ranker_precision`` setting, which every serving path passes (no
    default here, so serving has one default: the setting's)."""
    from training.ranker.bundle import load_ranker

    scorer = load_ranker(model_uri, precision)
    # One pass on a few unknown rows: the first real request must not pay torch's warm-up.
    scorer.score({"video_id": np.zeros(8, np.int64)}, {"user_id": 0})
    return scorer


Result = Ranked | Exception


def score_many(models: AliasModels[Scorer], requests: list[tuple[str, RankRequest]],
               ) -> list[Result]:
    """Score several requests with one forward pass per alias and column set (the
    micro-batch). A request whose alias cannot be served gets its exception in place of a
    result, not its neighbours'."""
    out: list[Result | None] = [None] * len(requests)
    groups: dict[tuple[str, tuple[str, ...], tuple[tuple[str, float], ...]], list[int]] = {}
    for i, (alias, req) in enumerate(requests):
        weights = tuple(sorted(req.weights.items())) if req.weights else ()
        groups.setdefault((alias, req.columns(), weights), []).append(i)
    for (alias, _, weights), idx in groups.items():
        reqs = [requests[i][1] for i in idx]
        try:
            loaded = models.get(alias)
            scores = np.asarray(loaded.model.score(*to_columns(reqs), weights=dict(weights)))
        except Exception as exc:
            for i in idx:
                out[i] = exc
            continue
        for i, part in zip(idx, np.split(scores, np.cumsum([len(r) for r in reqs])[:-1]),
                           strict=True):
            out[i] = (part, loaded.tag)
    return out  # type: ignore[return-value]


def resolve(future: Future[Ranked], got: Result) -> None:
    """Complete ``future`` with a scoring result or its exception."""
    if isinstance(got, Exception):
        future.set_exception(got)
    else:
        future.set_result(got)


class LocalRanker:
    """The ranker in the API process."""

    def __init__(self, model_name: str, poll_s: float, precision: str,
                 warm: tuple[str, ...] = ("champion",)) -> None:
        """``precision``: the ``ranker_precision`` setting (see :func:`load_scorer`)."""
        self.models: AliasModels[Scorer] = AliasModels.started(
            model_name, partial(load_scorer, precision=precision), poll_s, warm, owner="ranker")

    def submit(self, alias: str, request: RankRequest, timeout_s: float) -> Future[Ranked]:
        """Scored now, on the caller's thread (a forward pass is a few ms: no budget to
        enforce); the future is done when returned."""
        future: Future[Ranked] = Future()
        resolve(future, score_many(self.models, [(alias, request)])[0])
        return future

    def send(self) -> None:
        """Nothing is ever queued."""

    batch_full = True

    async def close(self) -> None:
        self.models.stop()


__all__ = ["LocalRanker", "ModelUnavailable", "RankRequest", "Ranked", "RankerBackend",
           "Scorer", "load_scorer", "resolve", "score_many"]
