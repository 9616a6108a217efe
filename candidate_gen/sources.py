"""Candidate sources and their blending under per-source quotas.

Each source answers "which videos might this user want" from one angle, cheaply, and
over-fetches (filters drop some): two-tower ANN (taste), following (recent videos of followed
creators), trending (weighted engagement in the user's region), fresh (uploads of the last
hours, which have no engagement yet), exploration (random picks from the best-rated fifth, so
the feed does not collapse onto what the models already believe), and popular (trending over
7 days everywhere: the stand-in for ANN when no index is loaded). :func:`blend` turns the
lists into one de-duplicated candidate set where no source takes more than its share unless
the others run dry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis

from candidate_gen.ann import AnnRetriever
from candidate_gen.catalog import Snapshot
from core.clock import DAY_MS, HOUR_MS
from platform_services import trending

SOURCES = ("following", "ann", "fresh", "trending", "explore", "popular")  # blend priority
CODE = {name: i for i, name in enumerate(SOURCES)}


@dataclass(frozen=True)
class SourceContext:
    """What every source may look at for one request."""

    user_id: int
    region: str | None
    followees: np.ndarray  # int64 creator ids
    snap: Snapshot
    now_ms: int
    rng: np.random.Generator


def following(ctx: SourceContext, n: int, days: float = 30, per_creator: int = 20) -> np.ndarray:
    """The newest videos of followed creators from the last ``days``, newest first."""
    since = ctx.now_ms - int(days * DAY_MS)
    lists = [ctx.snap.by_owner.get(int(c), np.zeros(0, np.int64))[:per_creator]
             for c in ctx.followees]
    ids = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    ids = ids[ctx.snap.created_ms[ids] >= since]
    return ids[np.argsort(-ctx.snap.created_ms[ids], kind="stable")][:n]


def fresh(ctx: SourceContext, n: int, hours: float) -> np.ndarray:
    return ctx.snap.fresh(ctx.now_ms - int(hours * HOUR_MS), n)


def explore(ctx: SourceContext, n: int) -> np.ndarray:
    """Up to ``n`` distinct random picks from the exploration pool (sampling positions with
    replacement and dropping repeats: no permutation of the whole pool per request)."""
    pool = ctx.snap.explore_pool
    if not len(pool):
        return pool
    picks = pool[ctx.rng.integers(0, len(pool), 2 * n)]
    _, first = np.unique(picks, return_index=True)
    return picks[np.sort(first)][:n]


def trending_ids(r: redis.Redis, ctx: SourceContext, n: int, window: str = "24h",
                 region: str | None = None, category: str | None = None) -> np.ndarray:
    got = trending.top(r, window, region, category, n, now_ms=ctx.now_ms)
    return np.fromiter((v for v, _ in got), np.int64, len(got))


def ann(retriever: AnnRetriever, ctx: SourceContext, n: int) -> np.ndarray:
    """The ``n`` nearest videos to the user's vector, the user's training history included
    (the feed filters everything seen in one pass)."""
    return retriever.search(ctx.user_id, n, exclude_history=False)[0]


def blend(lists: dict[str, np.ndarray], quotas: dict[str, float],
          total: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, source codes)``: each source up to ``round(share * total)`` of its best ids
    (sources earlier in :data:`SOURCES` win duplicates), then unused room goes to the other
    sources with ids left, in priority order, and to exploration only when none has any: a
    dry source's share is not exploration's."""
    names = sorted(lists, key=CODE.__getitem__)
    shares = sum(quotas.get(s, 0.0) for s in names) or 1.0
    arrays = {name: np.asarray(lists[name], np.int64) for name in names}
    top = max((int(a.max()) for a in arrays.values() if len(a)), default=-1)
    used = np.zeros(top + 1, bool)  # ids taken so far (ids are catalog positions, >= 0)
    taken: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    rest: dict[str, np.ndarray] = {}
    count = 0

    def take(name: str, ids: np.ndarray) -> None:
        nonlocal count
        used[ids] = True
        taken.append(ids)
        codes.append(np.full(len(ids), CODE[name], np.uint8))
        count += len(ids)

    for name in names:
        ids = _first_seen(arrays[name])
        ids = ids[~used[ids]]
        quota = max(0, min(round(quotas.get(name, 0.0) / shares * total), total - count))
        rest[name] = ids[quota:]
        take(name, ids[:quota])
    for name in sorted(rest, key=lambda s: (s == "explore", CODE[s])):
        if count >= total:
            break
        take(name, rest[name][~used[rest[name]]][: total - count])
    if not taken:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate(taken), np.concatenate(codes)


def _first_seen(ids: np.ndarray) -> np.ndarray:
    """``ids`` without repeats, in their order."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)] if len(first) < len(ids) else ids
