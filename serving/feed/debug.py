"""What ``GET /feed/for-you?debug=true`` adds to each item: how it got into the list.

The web player's debug overlay shows it (``serving/web``). It is only added on request, so the
default response keeps the product design's shape; it exposes nothing about other users: the
candidate source, the score the list was ordered by before re-ranking, the model version, the
experiment arms the viewer's list was made for and what the request had to do without.
"""

from __future__ import annotations

import math

import numpy as np

from serving.feed.page_cache import RankedList


def annotate(videos: list[dict], ranked: RankedList, positions: np.ndarray,
             degraded: list[str]) -> None:
    """Add ``debug`` to each rendered item of ``ranked`` at ``positions`` (same order)."""
    scores = ranked.scores.tolist() if len(ranked.scores) == len(ranked.ids) else None
    arms = [{"experiment": e, "variant": v} for e, v in ranked.arms]
    for item, pos in zip(videos, positions.tolist(), strict=True):
        score = scores[pos] if scores is not None else None
        item["debug"] = {
            "source": item["source"], "position": pos,
            "score": score if score is not None and math.isfinite(score) else None,
            "model_version": ranked.model_version, "experiment": ranked.experiment,
            "variant": ranked.variant, "arms": arms, "degraded": list(degraded),
        }
