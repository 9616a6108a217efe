"""95 % intervals for retrieval results: over seeds, and for paired differences over users.

- A model's headline number is the mean over its training seeds with a Student-t interval over
  those seeds (``scipy.stats.t``): the spread training randomness alone gives.
- A comparison of two models on the same test users is a bootstrap over users
  (``scipy.stats.bootstrap``, percentile, 2,000 resamples) of the mean per-user difference,
  each user's metric first averaged over the seeds. It is a "win" only when that interval
  excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class Interval:
    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        if np.isnan(self.low):
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def over_seeds(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and t-interval of one number measured once per seed (no interval from one seed)."""
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half)


def seed_mean(per_user: Sequence[dict[str, np.ndarray]], metric: str) -> dict[int, float]:
    """Each evaluated user's ``metric`` averaged over the seeds: {user index: value}."""
    sums: dict[int, list[float]] = {}
    for run in per_user:
        for u, v in zip(run["user"].tolist(), run[metric].tolist(), strict=True):
            sums.setdefault(u, []).append(v)
    return {u: float(np.mean(v)) for u, v in sums.items()}


def paired_difference(a: Sequence[dict[str, np.ndarray]], b: Sequence[dict[str, np.ndarray]],
                      metric: str, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean over the users both evaluated of (a - b) on ``metric``, bootstrapped over users."""
    ma, mb = seed_mean(a, metric), seed_mean(b, metric)
    users = sorted(set(ma) & set(mb))
    if not users:
        raise ValueError("no common evaluated users")
    diff = np.array([ma[u] - mb[u] for u in users])
    if len(diff) < 2 or np.all(diff == diff[0]):
        return Interval(float(diff.mean()), float(diff.mean()), float(diff.mean()))
    res = stats.bootstrap((diff,), np.mean, confidence_level=level, n_resamples=2000,
                          method="percentile", random_state=seed, vectorized=True,
                          batch=100)  # 100 resamples at a time: bounded memory
    ci = res.confidence_interval
    return Interval(float(diff.mean()), float(ci.low), float(ci.high))
