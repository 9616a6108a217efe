"""Re-ranking: from "best score first" to a feed people want to scroll.

The ranker scores videos one at a time; a page is judged as a whole. So, greedily, position by
position: take the best remaining video (by rank, plus a boost that decays with the video's
age so fresh uploads get a chance) such that its creator is not the previous video's creator
and its topic does not already fill half of the last ``topic_window`` positions. Every
``1 / explore_slots``-th position goes to the best remaining exploration candidate. When no
candidate within a look-ahead satisfies the rules they are relaxed (topic first, then the
creator rule), so the list never loses a video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOOKAHEAD = 64


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
           explore: np.ndarray, cfg: RerankConfig) -> np.ndarray:
    """A permutation of the candidates (indices into the inputs) in feed order."""
    queue = adjusted_order(scores, age_hours, cfg).tolist()
    owner, topic, is_explore = owners.tolist(), topics.tolist(), explore.tolist()
    every = round(1 / cfg.explore_slots) if cfg.explore_slots > 0 else 0
    max_same = (cfg.topic_window + 1) // 2
    recent: list[int] = []  # topics of the last topic_window - 1 positions
    out: list[int] = []
    last_owner = None
    while queue:
        slot = every and (len(out) + 1) % every == 0
        pick = None
        for relax in (0, 1, 2):
            for j, i in enumerate(queue[:LOOKAHEAD]):
                if slot and relax == 0 and not is_explore[i]:
                    continue
                if relax < 2 and owner[i] == last_owner:
                    continue
                if relax < 1 and topic[i] >= 0 and recent.count(topic[i]) >= max_same:
                    continue
                pick = j
                break
            if pick is not None:
                break
        i = queue.pop(pick or 0)
        out.append(i)
        last_owner = owner[i]
        recent.append(topic[i])
        if len(recent) >= cfg.topic_window:
            recent.pop(0)
    return np.asarray(out, np.int64)
