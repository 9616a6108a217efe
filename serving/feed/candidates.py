"""A first page's candidates, from the sources to the ranker's input, in one pass.

sources (ANN, following, trending, fresh, exploration; each over-fetches by what the viewer
has seen) -> one filter (visible to this viewer and not seen: the feed's exposures, the
stream's watched set and the retrieval model's training history, together) -> blend under
the quotas -> the online features of what is left -> the ranker's columnar request. The
features are fetched only for candidates that can be shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import redis

from candidate_gen import sources as src
from candidate_gen.catalog import Snapshot
from core.config import Settings
from features.ranking_read import CandidateFeatures
from serving.feed.context import TrendingCache, UserState
from serving.feed.degrade import Trace
from serving.feed.filters import Viewer, visible
from serving.feed.scoring import rank_request
from serving.feed.services import FeedServices
from serving.ranking.backends import RankRequest
from serving.ranking.models import ModelUnavailable

OVERFETCH = 2  # sources fetch twice their quota: filters and de-duplication eat some


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray  # int64 video ids (catalog positions)
    sources: np.ndarray  # uint8 source codes
    request: RankRequest
    quotas: dict[int, float]  # source code -> share, as blended


def gather(svc: FeedServices, trending: TrendingCache, viewer: Viewer, state: UserState,
           retrieval_alias: str, quotas: Mapping[str, float] | None, snap: Snapshot, now: int,
           trace: Trace) -> Candidates:
    """``quotas``: an experiment variant's source shares over the settings' (None: none)."""
    s = svc.settings
    ctx = src.SourceContext(viewer.user_id, viewer.region, viewer.followees, snap, now,
                            np.random.default_rng())
    with trace.stage("candidates"):
        history = np.zeros(0, np.int64)
        retriever = None
        try:
            retriever = svc.retrievers.get(retrieval_alias).model
            history = retriever.history(viewer.user_id)
        except ModelUnavailable as exc:
            trace.degrade("ann", exc)
        seen = np.unique(np.concatenate([state.seen, history]))
        lists, shares = _sources(s, trending, ctx, retriever, quotas, len(seen), trace)
    with trace.stage("filter"):
        every = np.unique(np.concatenate(list(lists.values()) or [np.zeros(0, np.int64)]))
        # One mask over the ids (a lookup per candidate, where np.isin sorts every list).
        allowed = np.zeros(int(every[-1]) + 1 if len(every) else 0, bool)
        allowed[every] = visible(snap, viewer, every)
        allowed[seen[(seen >= 0) & (seen < len(allowed))]] = False
        lists = {k: v[allowed[v]] for k, v in lists.items()}
        ids, codes = src.blend(lists, shares, s.feed_candidates)
    with trace.stage("features"):
        feats = _features(svc, viewer.user_id, state, ids, snap, now, trace)
        request = rank_request(viewer.user_id, ids, snap, now, feats)
    return Candidates(ids, codes, request, {src.CODE[k]: v for k, v in shares.items()})


def _sources(s: Settings, trending: TrendingCache, ctx: src.SourceContext, retriever,  # noqa: ANN001
             variant_quotas: Mapping[str, float] | None, seen: int,
             trace: Trace) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each source fetches its quota twice over plus as many as the user has seen, so a
    heavy user's seen filter cannot empty it (the best ANN hits are the ones shown)."""
    quotas = {**s.feed_quotas, **(variant_quotas or {})}
    if retriever is None:
        quotas["popular"] = quotas.pop("ann", 0.0)  # popularity stands in for taste
    cap = max(ctx.snap.capacity, 1)
    want = {k: min(cap, max(1, round(v * s.feed_candidates * OVERFETCH)) + seen)
            for k, v in quotas.items()}
    lists: dict[str, np.ndarray] = {
        "following": src.following(ctx, want.get("following", 1)),
        "fresh": src.fresh(ctx, want.get("fresh", 1), s.feed_fresh_hours),
        "explore": src.explore(ctx, want.get("explore", 1)),
    }
    if retriever is not None:
        with trace.stage("ann"):
            lists["ann"] = src.ann(retriever, ctx, want.get("ann", 1))
    for name, window, region in (("trending", "24h", ctx.region), ("popular", "7d", None)):
        if name not in quotas:
            continue
        try:
            lists[name] = trending.ids(window, region, want[name])
        except redis.RedisError as exc:
            trace.degrade("trending", exc)
    return lists, quotas


def _features(svc: FeedServices, user_id: int, state: UserState, ids: np.ndarray,
              snap: Snapshot, now: int, trace: Trace) -> CandidateFeatures | None:
    reader = svc.features
    if reader is None or state.features is None:
        return None  # already recorded as degraded when the user's read failed
    try:
        feats = reader.for_candidates(user_id, state.features, ids, snap.owner[ids], now)
    except Exception as exc:
        trace.degrade("features", exc)
        return None
    if feats.timed_out:
        trace.degrade("features", "timed out")
    return feats
