"""Assignment: deterministic, balanced, independent across layers, holdouts, targeting."""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.assignment import (
    BUCKETS,
    HOLDOUT,
    LiveExperiment,
    LiveVariant,
    assign_user,
)

USERS = np.arange(1, 100_001)


def experiment(name: str, layer: str = "default", weights: tuple[float, ...] = (50, 50),
               holdout: float = 0.0, lo: int = 0, hi: int = BUCKETS,
               regions: frozenset[str] | None = None, **params: object) -> LiveExperiment:
    upper, variants = 0, []
    for i, w in enumerate(weights):
        upper += round(w * BUCKETS / 100)
        variants.append(LiveVariant(f"v{i}", upper, dict(params) if i else {}))
    return LiveExperiment(name, f"salt-{name}", layer, lo, hi, round(holdout * BUCKETS / 100),
                          regions, tuple(variants))


def variants_of(exps: list[LiveExperiment], users: np.ndarray = USERS) -> list[dict]:
    return [{a.experiment: a.variant for a in assign_user(exps, int(u)).arms} for u in users]


def test_deterministic_and_balanced_over_100k_users() -> None:
    exp = experiment("balance", weights=(50, 30, 20))
    got = variants_of([exp])
    assert got == variants_of([exp])  # same user, same variant, every time
    counts = np.array([sum(g["balance"] == f"v{i}" for g in got) for i in range(3)])
    test = stats.chisquare(counts, np.array([0.5, 0.3, 0.2]) * len(USERS))
    assert test.pvalue > 0.001, counts
    # ... and far from a wrong split (the chi-square can fail).
    assert stats.chisquare(counts, np.array([0.45, 0.35, 0.2]) * len(USERS)).pvalue < 1e-6


def test_independent_across_layers() -> None:
    a, b = experiment("a", layer="ranking"), experiment("b", layer="retrieval")
    got = variants_of([a, b])
    table = np.zeros((2, 2))
    for g in got:
        table[int(g["a"][1]), int(g["b"][1])] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001, table
    # Two experiments of one layer never share a user.
    c, d = experiment("c", lo=0, hi=4000), experiment("d", lo=4000, hi=10_000)
    both = variants_of([c, d], USERS[:20_000])
    assert all(len(g) == 1 for g in both)
    share_c = sum("c" in g for g in both) / len(both)
    assert abs(share_c - 0.4) < 0.02


def test_holdout_and_population_and_params() -> None:
    exp = experiment("h", holdout=10, regions=frozenset({"eu"}), ranker_alias="challenger",
                     explore_slots=0.3)
    got = [assign_user([exp], int(u), "eu") for u in USERS[:20_000]]
    held = sum(g.variant == HOLDOUT for g in got) / len(got)
    assert abs(held - 0.10) < 0.01
    treated = [g for g in got if g.variant == "v1"]
    assert treated and all(g.ranker_alias == "challenger" and g.explore_slots == 0.3
                           for g in treated)
    control = [g for g in got if g.variant in ("v0", HOLDOUT)]
    assert all(g.ranker_alias == "champion" and g.explore_slots is None for g in control)
    outside = assign_user([exp], 7, "us")
    assert outside.arms == () and outside.experiment is None


def test_salt_decides() -> None:
    """Different experiments reshuffle users (a salt per experiment)."""
    a = variants_of([experiment("x")], USERS[:2000])
    b = variants_of([experiment("y")], USERS[:2000])
    same = sum(p["x"] == q["y"] for p, q in zip(a, b, strict=True)) / 2000
    assert 0.45 < same < 0.55
