"""Re-ranking: from "best score first" to a feed people want to scroll.

The ranker scores videos one at a time; a page is judged as a whole. So, greedily, position by
position: take the best remaining video (by rank, plus a boost that decays with the video's
age so fresh uploads get a chance) such that

- its **source** keeps to its quota: every source's count over the positions so far stays
  within one of its share (``quotas``, re-divided among the sources that still have
  candidates when one runs dry: a dry source's share goes to the others, never to
  exploration); a source that fell a whole video behind is served first;
- every ``1 / explore_slots``-th position goes to the best remaining exploration candidate,
  and exploration takes no other position while any other candidate is left;
- its creator is not the previous video's creator, and its topic does not already fill half
  of the last ``topic_window`` positions.

When no candidate within a look-ahead satisfies the rules they are relaxed (topic first, then
the creator rule, then the quotas), so the list never loses a video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOOKAHEAD = 64
EXPLORE = -1  # the exploration source's key when callers give no source codes


@dataclass(frozen=True)
class RerankConfig:
    explore_slots: float = 0.1
    fresh_hours: float = 48.0
    freshness_boost: float = 0.15
    topic_window: int = 5


def adjusted_order(scores: np.ndarray, age_hours: np.ndarray, cfg: RerankConfig) -> np.ndarray:
    """Indices by rank score (1 best .. 0 worst) plus the freshness boost, best first."""
    n = len(scores)
    rank = np.empty(n, np.float64)
    rank[np.argsort(-scores, kind="stable")] = 1.0 - np.arange(n) / max(n, 1)
    boost = cfg.freshness_boost * np.exp(-np.clip(age_hours, 0, None) / cfg.fresh_hours)
    return np.argsort(-(rank + boost), kind="stable")


def rerank(scores: np.ndarray, owners: np.ndarray, topics: np.ndarray, age_hours: np.ndarray,
           explore: np.ndarray, cfg: RerankConfig, sources: np.ndarray | None = None,
           quotas: dict[int, float] | None = None, depth: int | None = None) -> np.ndarray:
    """A permutation of the candidates (indices into the inputs) in feed order. ``sources`` /
    ``quotas``: each candidate's source code and each source's configured share (without
    them every non-exploration candidate counts as one source). ``depth``: only the first
    ``depth`` positions are chosen; the rest follow in adjusted order until :func:`resume`
    chooses them (a first page shows 20 of 500 candidates: choosing every position up front
    was a tenth of its CPU)."""
    order = adjusted_order(scores, age_hours, cfg)
    return _choose(order[:0], order, owners, topics, explore, cfg, sources, quotas, depth)


def resume(done: int, owners: np.ndarray, topics: np.ndarray, explore: np.ndarray,
           cfg: RerankConfig, sources: np.ndarray | None = None,
           quotas: dict[int, float] | None = None, depth: int | None = None) -> np.ndarray:
    """The next ``depth`` positions of a list :func:`rerank` chose ``done`` positions of (the
    inputs in that list's order): a permutation of it. Choosing in steps gives the list that
    choosing at once would have."""
    at = np.arange(len(owners))
    return _choose(at[:done], at[done:], owners, topics, explore, cfg, sources, quotas, depth)


def _choose(placed: np.ndarray, queue: np.ndarray, owners: np.ndarray, topics: np.ndarray,
            explore: np.ndarray, cfg: RerankConfig, sources: np.ndarray | None,
            quotas: dict[int, float] | None, depth: int | None) -> np.ndarray:
    """``placed`` (indices in feed order), then up to ``depth`` picks from ``queue`` (indices
    in adjusted order, best first) by the rules, then the rest of ``queue``."""
    n = len(owners)
    codes = np.zeros(n, np.int64) if sources is None else np.asarray(sources, np.int64)
    codes = np.where(explore, EXPLORE, codes)
    quotas = quotas or {0: 1.0}
    keys = sorted(set(codes[codes != EXPLORE].tolist()) | {k for k in quotas if k != EXPLORE})
    share = [max(0.0, quotas.get(k, 0.0)) for k in keys]  # a source without one only fills in
    x = len(keys)  # the exploration queue's slot
    # Per-source queues of candidate indices, best first; rank[i]: i's place in ``queue``.
    per = np.full(n, x, np.int64)
    for j, k in enumerate(keys):
        per[codes == k] = j
    left = [queue[per[queue] == j].tolist() for j in range(x + 1)]
    rank = np.zeros(n, np.int64)
    rank[queue] = np.arange(len(queue))
    rank_l, owner, topic = rank.tolist(), owners.tolist(), topics.tolist()
    # What the placed positions left behind: each source's count, the last creator, the
    # topics of the last topic_window - 1 positions.
    taken = np.bincount(per[placed], minlength=x + 1)[:x].tolist()
    active = [j for j in range(x) if left[j]]
    total = sum(share[j] for j in active)
    every = round(1 / cfg.explore_slots) if cfg.explore_slots > 0 else 0
    max_same = (cfg.topic_window + 1) // 2
    window = cfg.topic_window - 1
    recent = [topic[i] for i in placed[len(placed) - window:].tolist()] if window else []
    in_window: dict[int, int] = {}  # topic -> its count in ``recent``
    for t in recent:
        in_window[t] = in_window.get(t, 0) + 1
    out: list[int] = []
    last_owner = owner[int(placed[-1])] if len(placed) else None
    steps = len(queue) if depth is None else min(depth, len(queue))
    for k in range(len(placed), len(placed) + steps):
        slot = bool(every) and (k + 1) % every == 0
        pick = None
        # One pass per position over the rules, strictest first (the quota queues are the
        # same for the first three levels: computed once).
        quota_ok = _allowed(share, taken, active, total, True) if active else [x]
        for relax in (0, 1, 2, 3):
            if slot and relax == 0 and left[x]:
                allowed = [x]
            elif relax < 3 or not active:
                allowed = quota_ok
            else:
                allowed = active
            best_rank = n
            for j in allowed:
                q = left[j]
                for pos in range(min(len(q), LOOKAHEAD)):  # the first that fits
                    i = q[pos]
                    if relax < 2 and owner[i] == last_owner:
                        continue
                    if relax < 1 and in_window.get(topic[i], 0) >= max_same and topic[i] >= 0:
                        continue
                    if rank_l[i] < best_rank:
                        best_rank, pick = rank_l[i], (j, pos)
                    break
            if pick is not None:
                break
        if pick is None:  # every look-ahead empty of allowed picks: the best one left
            pick = min(((j, 0) for j in range(x + 1) if left[j]),
                       key=lambda p: rank_l[left[p[0]][0]])
        j, pos = pick
        i = left[j].pop(pos)
        if j < x:
            taken[j] += 1
            if not left[j]:  # ran dry: its share goes to the others (never to exploration)
                active.remove(j)
                total = sum(share[a] for a in active)
        out.append(i)
        last_owner = owner[i]
        t = topic[i]
        recent.append(t)
        in_window[t] = in_window.get(t, 0) + 1
        if len(recent) > window:
            gone = recent.pop(0)
            in_window[gone] -= 1
    chosen = np.asarray(out, np.int64)
    unchosen = np.ones(n, bool)
    unchosen[chosen] = False
    return np.concatenate([placed, chosen, queue[unchosen[queue]]]).astype(np.int64)


def _allowed(share: list[float], taken: list[int], active: list[int], total: float,
             strict: bool) -> list[int]:
    """Queues allowed at the next position (``active``: sources with candidates left, whose
    shares sum to ``total``): only the most-behind one when a source is a whole video behind
    its share of the non-exploration positions, else every source not a whole video ahead."""
    if not strict or total <= 0:
        return active
    n = (sum(taken) + 1) / total
    best, best_due, allowed = -1, 1.0, []
    for j in active:
        due = share[j] * n - taken[j]
        if due >= best_due:
            best, best_due = j, due
        if due > -1.0:
            allowed.append(j)
    return [best] if best >= 0 else allowed
