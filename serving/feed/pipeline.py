"""The for-you request, stage by stage (see ARCHITECTURE.md, "For-you request").

assignment -> candidate sources in parallel (ANN and trending on the pool, the in-memory ones
inline) -> filters -> blend under quotas -> online features -> ranking (Ray Serve or
in-process, within ``ranker_timeout_ms``) -> re-ranking -> the first page, the rest cached
behind a signed cursor -> exposures -> response. Every dependency failure degrades (see
:mod:`serving.feed.degrade`) instead of failing the request. Trending and following feeds share
the page / cursor / exposure tail (:meth:`Feeds.serve_list`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np
import redis
from sqlalchemy.orm import Session

from candidate_gen import sources as src
from candidate_gen.catalog import Snapshot
from core.clock import now_ms
from core.events import ExperimentExposure
from experiments.assignment import Assignment
from platform_services import trending
from platform_services.bus.outbox import emit
from platform_services.media.delivery import PlaylistSigner
from platform_services.storage.models import User
from serving.feed import cursor as cursors
from serving.feed import page_cache
from serving.feed.degrade import Trace
from serving.feed.filters import Viewer, load_viewer, visible
from serving.feed.render import MediaUrls, render
from serving.feed.rerank import RerankConfig, rerank
from serving.feed.scoring import age_hours, cheap_scores, rank_request
from serving.feed.services import FeedServices
from serving.ranking.backends import RankRequest
from serving.ranking.models import ModelUnavailable

OVERFETCH = 2  # sources fetch twice their quota: filters and de-duplication eat some
FALLBACK_VERSION = "fallback:cheap-score"


@dataclass
class Candidates:
    viewer: Viewer
    snap: Snapshot
    ids: np.ndarray
    sources: np.ndarray
    now_ms: int
    request: RankRequest


class Feeds:
    """The feed endpoints' logic over one process's :class:`FeedServices`."""

    def __init__(self, svc: FeedServices) -> None:
        self.svc, self.s = svc, svc.settings
        self.urls = MediaUrls(svc.blobs, playlists=PlaylistSigner.from_settings(svc.settings))
        self.inflight = 0  # first pages admitted and not answered (serving.routes.feed.admit)
        self.rerank_cfg = RerankConfig(self.s.feed_explore_slots, self.s.feed_fresh_hours,
                                       self.s.feed_freshness_boost, self.s.feed_topic_window)

    # --- for you ----------------------------------------------------------------------------

    @property
    def saturated(self) -> bool:
        """As many first pages in flight as the process should hold: shed the next one."""
        return self.inflight >= self.s.feed_max_inflight

    async def for_you(self, session: Session, user: User, page_size: int) -> tuple[dict, Trace]:
        trace = Trace()
        assignment = self.svc.assignment(user.id, user.region)
        cands = await asyncio.to_thread(self._candidates, session, user, assignment, trace)
        cands.request.weights = assignment.score_weights
        scores, version = await self._rank(cands, assignment.ranker_alias, trace)
        cfg = self.rerank_cfg if assignment.explore_slots is None else replace(
            self.rerank_cfg, explore_slots=assignment.explore_slots)
        with trace.stage("rerank"):
            order = rerank(scores, cands.snap.owner[cands.ids], cands.snap.topic[cands.ids],
                           age_hours(cands.snap, cands.ids, cands.now_ms),
                           cands.sources == src.CODE["explore"], cfg)
        ranked = page_cache.RankedList(user.id, cands.ids[order], cands.sources[order], version,
                                       assignment.variant, assignment.experiment,
                                       tuple(trace.degraded),
                                       tuple((a.experiment, a.variant) for a in assignment.arms))
        body = await asyncio.to_thread(self.serve_list, session, user, ranked, page_size, trace,
                                       cands.snap, cands.viewer)
        return body, trace

    def _candidates(self, session: Session, user: User, assignment: Assignment,
                    trace: Trace) -> Candidates:
        with trace.stage("viewer"):
            viewer = load_viewer(session, user)
            session.commit()  # no connection held while sources, features and ranking run
        snap, now = self.svc.catalog.snapshot, now_ms()
        ctx = src.SourceContext(user.id, user.region, viewer.followees, snap, now,
                                np.random.default_rng())
        with trace.stage("candidates"):
            lists, quotas = self._sources(ctx, assignment, self._seen_count(user.id), trace)
        with trace.stage("filter"):
            lists = self._filter(lists, snap, viewer, trace)
            ids, sources = src.blend(lists, quotas, self.s.feed_candidates)
        with trace.stage("features"):
            feats = self._features(user.id, ids, snap, trace)
            if feats is not None and feats.user.get("u_seen"):
                keep = ~np.isin(ids, np.asarray(feats.user["u_seen"], np.int64))
                if not keep.all():
                    ids, sources = ids[keep], sources[keep]
                    feats = type(feats)(feats.user, feats.items.iloc[keep], feats.user_found,
                                        feats.videos_found, feats.timed_out)
            request = rank_request(user.id, ids, snap, now, feats)
        return Candidates(viewer, snap, ids, sources, now, request)

    def _seen_count(self, user_id: int) -> int:
        """How many videos the seen filter may remove (0 without Redis: the filter then
        degrades too)."""
        try:
            return page_cache.seen_count(self.svc.redis, user_id)
        except redis.RedisError:
            return 0

    def _sources(self, ctx: src.SourceContext, assignment: Assignment, seen: int,
                 trace: Trace) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Each source fetches its quota twice over plus as many as the user has seen, so a
        heavy user's seen filter cannot empty it (the best ANN hits are the ones shown)."""
        quotas = {**self.s.feed_quotas, **(assignment.quotas or {})}
        want = {k: max(1, round(v * self.s.feed_candidates * OVERFETCH)) + seen for k, v in
                quotas.items()}
        pool, r = self.svc.pool, self.svc.redis
        jobs: dict[str, Future] = {
            "trending": pool.submit(src.trending_ids, r, ctx, want.get("trending", 1), "24h",
                                    ctx.region)}
        try:
            retriever = self.svc.retrievers.get(assignment.retrieval_alias).model
            jobs["ann"] = pool.submit(_timed, trace, "ann", src.ann, retriever, ctx,
                                      want.get("ann", 1))
        except ModelUnavailable as exc:
            trace.degrade("ann", exc)
            quotas["popular"] = quotas.pop("ann", 0.0)
            jobs["popular"] = pool.submit(src.trending_ids, r, ctx,
                                          round(quotas["popular"] * self.s.feed_candidates
                                                * OVERFETCH) + seen or 1, "7d")
        lists = {
            "following": src.following(ctx, want.get("following", 1)),
            "fresh": src.fresh(ctx, want.get("fresh", 1), self.s.feed_fresh_hours),
            "explore": src.explore(ctx, want.get("explore", 1)),
        }
        deadline = time.monotonic() + self.s.feed_sources_timeout_ms / 1000
        for name, job in jobs.items():
            try:
                lists[name] = job.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                job.cancel()
                trace.degrade("trending" if name == "popular" else name, exc)
        return lists, quotas

    def _filter(self, lists: dict[str, np.ndarray], snap: Snapshot, viewer: Viewer,
                trace: Trace) -> dict[str, np.ndarray]:
        every = np.unique(np.concatenate(list(lists.values()) or [np.zeros(0, np.int64)]))
        ok = every[visible(snap, viewer, every)]
        try:
            ok = ok[~page_cache.seen_mask(self.svc.redis, viewer.user_id, ok)]
        except redis.RedisError as exc:
            trace.degrade("cache", exc)
        return {k: v[np.isin(v, ok)] for k, v in lists.items()}

    def _features(self, user_id: int, ids: np.ndarray, snap: Snapshot, trace: Trace):  # noqa: ANN202
        reader = self.svc.features
        if reader is None:
            trace.degrade("features", "no online feature reader")
            return None
        try:
            feats = reader.get(user_id, ids.tolist(), creator_ids=snap.owner[ids].tolist())
        except Exception as exc:
            trace.degrade("features", exc)
            return None
        if feats.timed_out:
            trace.degrade("features", "timed out")
        return feats

    async def _rank(self, c: Candidates, alias: str, trace: Trace) -> tuple[np.ndarray, str]:
        t = time.perf_counter()
        try:
            if self.svc.ranker is None:
                raise ModelUnavailable("no ranker backend")
            if len(c.ids):
                scores, version = await asyncio.wait_for(
                    self.svc.ranker.score(alias, c.request), self.s.ranker_timeout_ms / 1000)
                return np.asarray(scores, np.float64), version
        except Exception as exc:  # down, not loaded, or over the time budget
            trace.degrade("ranker", repr(exc))
        finally:
            trace.add("ranking", time.perf_counter() - t)
        return cheap_scores(c.snap, c.ids, c.sources, c.now_ms,
                            self.s.feed_fresh_hours), FALLBACK_VERSION

    # --- trending and following -------------------------------------------------------------

    def trending(self, session: Session, user: User, window: str, region: str | None,
                 category: str | None, page_size: int, trace: Trace) -> dict:
        """Most engagement in ``window`` (by viewers of ``region``, videos of ``category``);
        without Redis, all-time views from the catalog."""
        snap, viewer = self.svc.catalog.snapshot, load_viewer(session, user)
        n = self.s.feed_candidates
        with trace.stage("candidates"):
            try:
                got = trending.top(self.svc.redis, window, region, category, n * OVERFETCH)
                ids = np.fromiter((v for v, _ in got), np.int64, len(got))
            except redis.RedisError as exc:
                trace.degrade("trending", exc)
                ids = np.flatnonzero(snap.owner >= 0)
                if category is not None:
                    code = snap.topics.index(category) if category in snap.topics else -2
                    ids = ids[snap.topic[ids] == code]
                ids = ids[np.argsort(-snap.views[ids], kind="stable")][: n * OVERFETCH]
        ids = ids[visible(snap, viewer, ids)][:n]
        ranked = page_cache.RankedList(user.id, ids, np.full(len(ids), src.CODE["trending"],
                                                             np.uint8), f"trending:{window}")
        return self.serve_list(session, user, ranked, page_size, trace, snap, viewer)

    def following(self, session: Session, user: User, page_size: int, trace: Trace) -> dict:
        """The newest visible videos of the creators the user follows (last 30 days)."""
        snap, viewer = self.svc.catalog.snapshot, load_viewer(session, user)
        ctx = src.SourceContext(user.id, user.region, viewer.followees, snap, now_ms(),
                                np.random.default_rng())
        with trace.stage("candidates"):
            ids = src.following(ctx, self.s.feed_candidates * OVERFETCH)
        ids = ids[visible(snap, viewer, ids)][: self.s.feed_candidates]
        ranked = page_cache.RankedList(user.id, ids, np.full(len(ids), src.CODE["following"],
                                                             np.uint8), "following")
        return self.serve_list(session, user, ranked, page_size, trace, snap, viewer)

    # --- pages ------------------------------------------------------------------------------

    def serve_list(self, session: Session, user: User, ranked: page_cache.RankedList,
                   page_size: int, trace: Trace, snap: Snapshot | None = None,
                   viewer: Viewer | None = None) -> dict:
        """The first page of a fresh list; the rest cached behind a cursor."""
        list_id = uuid.uuid4().hex
        expires = None
        if len(ranked.ids) > page_size:
            with trace.stage("cache"):
                try:
                    page_cache.save(self.svc.redis, list_id, ranked, self.s.feed_cache_ttl_s)
                    expires = int(time.time()) + self.s.feed_cache_ttl_s
                except redis.RedisError as exc:
                    trace.degrade("cache", exc)
        return self._page(session, user, list_id, ranked, 0, page_size, expires, trace, snap,
                          viewer)

    def next_page(self, session: Session, user: User, token: str, page_size: int,
                  trace: Trace) -> dict | None:
        """The page after ``token``; None when the cache is unreachable (start afresh).
        Raises :class:`~serving.feed.cursor.CursorError` for a bad cursor."""
        assert self.s.signing_secret is not None
        c = cursors.decode(self.s.signing_secret, token, user.id)
        with trace.stage("cache"):
            try:
                ranked = page_cache.load(self.svc.redis, c.list_id)
            except redis.RedisError as exc:
                trace.degrade("cache", exc)
                return None
        if ranked is None or ranked.user_id != user.id:
            raise cursors.CursorError("cursor expired")
        for component in ranked.degraded:
            trace.degrade(component, "the cached list was built without it")
        return self._page(session, user, c.list_id, ranked, c.offset, page_size, c.expires_s,
                          trace)

    def _page(self, session: Session, user: User, list_id: str, ranked: page_cache.RankedList,
              offset: int, page_size: int, expires_s: int | None, trace: Trace,
              snap: Snapshot | None = None, viewer: Viewer | None = None) -> dict:
        """Up to ``page_size`` still-visible videos from ``offset``, logged and rendered; a
        cursor to the rest while ``expires_s`` (the cached list's life) is set."""
        with trace.stage("page"):
            snap = snap or self.svc.catalog.snapshot
            viewer = viewer or load_viewer(session, user)
            end, picked = offset, []
            while len(picked) < page_size and end < len(ranked.ids):
                chunk = np.arange(end, min(len(ranked.ids), end + page_size - len(picked)))
                ok = visible(snap, viewer, ranked.ids[chunk])  # a video may have gone since
                picked.extend(chunk[ok].tolist())
                end = int(chunk[-1]) + 1
            pos = np.asarray(picked, np.int64)
            ids, sources = ranked.ids[pos], ranked.sources[pos]
            self._log_exposure(session, user, list_id, ranked, ids, sources, pos, trace)
            more = expires_s is not None and end < len(ranked.ids)
            token = None
            if more:
                assert self.s.signing_secret is not None
                token = cursors.encode(self.s.signing_secret,
                                       cursors.Cursor(list_id, user.id, end, expires_s))
            items = render(snap, ids, sources, pos, self.urls)
            return {"items": items, "next_cursor": token, "has_more": more,
                    "request_id": list_id, "model_version": ranked.model_version}

    def _log_exposure(self, session: Session, user: User, list_id: str,
                      ranked: page_cache.RankedList, ids: np.ndarray, sources: np.ndarray,
                      positions: np.ndarray, trace: Trace) -> None:
        """One exposure per experiment arm the list was made for (one without any when none):
        logged only here, when a page is actually served."""
        if not len(ids):
            return
        arms = ranked.arms or ((ranked.experiment, ranked.variant),)
        video_ids, names = ids.tolist(), [src.SOURCES[s] for s in sources.tolist()]
        latency, degraded = round(trace.elapsed_ms(), 3), trace.degraded
        emit(session, *(ExperimentExposure(
            user_id=user.id, request_id=list_id, experiment=experiment, variant=variant,
            model_version=ranked.model_version, video_ids=video_ids, sources=names,
            first_position=int(positions[0]), latency_ms=latency, degraded=degraded)
            for experiment, variant in arms))
        session.commit()
        try:
            page_cache.mark_seen(self.svc.redis, user.id, ids, now_ms(), self.s.feed_seen_max)
        except redis.RedisError as exc:
            trace.degrade("cache", exc)


def _timed(trace: Trace, stage: str, fn, *args):  # noqa: ANN001, ANN002, ANN202
    t = time.perf_counter()
    try:
        return fn(*args)
    finally:
        trace.add(stage, time.perf_counter() - t)
