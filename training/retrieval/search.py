"""Hyper-parameter search on validation: a joint grid, coordinate sweeps, and edge extension.

A value chosen on the edge of its grid says only that the optimum may lie beyond it. So after
the joint grid over the ``joint`` axes, every axis is swept with the others held at the best
setting, and whenever the best value of an extensible axis sits on the edge of what was tried,
the next value in that direction (one geometric step, within ``bounds``) is tried too, until
the chosen value is interior or its bound is reached. The selection only ever sees validation
metrics: :func:`select` takes (params, validation metrics) pairs and nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Params = dict[str, Any]
Metrics = Mapping[str, float]


@dataclass
class SearchSpace:
    """``axes``: values to try per parameter; ``joint``: axes searched as a full product first
    (the others start at their middle value, the lower of two); ``bounds``: (low, high) of
    the numeric axes that may be extended past their listed values; ``max_rounds``:
    coordinate sweeps at most."""

    axes: dict[str, list[Any]]
    joint: tuple[str, ...] = ()
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_rounds: int = 3

    def start(self) -> list[Params]:
        base = {k: v[(len(v) - 1) // 2] for k, v in self.axes.items()}
        joint = [k for k in self.joint if k in self.axes]
        return [{**base, **dict(zip(joint, combo, strict=True))}
                for combo in itertools.product(*(self.axes[k] for k in joint))]


def select(trials: Sequence[tuple[Params, Metrics]], metric: str) -> tuple[Params, Metrics]:
    """The trial with the best ``metric`` (first on ties). ``trials`` are validation results:
    callers never pass test metrics here (a test checks the benchmark and the tuner)."""
    if not trials:
        raise ValueError("nothing to select from")
    best = trials[0]
    for trial in trials[1:]:
        if trial[1][metric] > best[1][metric]:
            best = trial
    return best


def next_value(values: Sequence[Any], upward: bool, bound: float) -> Any | None:
    """One geometric step beyond the edge of ``values`` (sorted numbers), None at the bound.
    Integers stay integers; a step from 0 (or to it) is not geometric, so 0 is not extended."""
    edge, inner = (values[-1], values[-2]) if upward else (values[0], values[1])
    if edge == 0 or inner == 0:
        return None
    new = edge * (edge / inner)
    if isinstance(edge, int) and not isinstance(edge, bool):
        new = int(round(new))
        if new == edge:
            new = edge + (1 if upward else -1)
    if (upward and new > bound) or (not upward and new < bound):
        new = bound if (upward and edge < bound) or (not upward and edge > bound) else None
        if new is not None and isinstance(edge, int):
            new = int(new)
    return new


@dataclass
class SearchResult:
    best: Params
    metrics: Metrics
    trials: list[tuple[Params, Metrics]]
    tried: dict[str, list[Any]]  # every value tried per axis, sorted
    status: dict[str, str]  # per axis: "interior", "edge (bound)", "edge" or "single value"


def search(space: SearchSpace, evaluate: Callable[[Params], Metrics],
           metric: str) -> SearchResult:
    """Joint grid, then coordinate sweeps with edge extension; ``evaluate`` fits one setting
    and returns its validation metrics (each distinct setting is fitted once)."""
    trials: list[tuple[Params, Metrics]] = []
    seen: dict[tuple, Metrics] = {}
    axes = {k: list(v) for k, v in space.axes.items()}

    def tried(params: Params) -> Metrics:
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in seen:
            seen[key] = evaluate(params)
            trials.append((params, seen[key]))
        return seen[key]

    for params in space.start():
        tried(params)
    for _ in range(space.max_rounds):
        before = select(trials, metric)[0]
        for name in axes:
            while True:
                best = select(trials, metric)[0]
                for value in axes[name]:
                    tried({**best, name: value})
                best = select(trials, metric)[0]
                new = _extension(axes[name], best[name], space.bounds.get(name))
                if new is None:
                    break
                axes[name] = sorted([*axes[name], new])
        if select(trials, metric)[0] == before:
            break
    best, metrics = select(trials, metric)
    values = {k: sorted({p[k] for p, _ in trials if k in p}, key=_order) for k in axes}
    status = {k: _status(values[k], best[k], space.bounds.get(k)) for k in axes}
    return SearchResult(best, metrics, trials, values, status)


def _order(value: Any) -> tuple[int, Any]:
    return (1, 0) if value is None else (0, value)


def _extension(values: list[Any], chosen: Any, bound: tuple[float, float] | None) -> Any | None:
    if bound is None or len(values) < 2 or chosen not in (values[0], values[-1]):
        return None
    upward = chosen == values[-1]
    return next_value(values, upward, bound[1] if upward else bound[0])


def _status(values: list[Any], chosen: Any, bound: tuple[float, float] | None) -> str:
    if len(values) < 2:
        return "single value"
    if chosen is None or isinstance(chosen, bool) or not isinstance(chosen, int | float):
        return "categorical"
    if chosen not in (values[0], values[-1]):
        return "interior"
    return "edge (bound)" if bound is not None and chosen in bound else "edge"
