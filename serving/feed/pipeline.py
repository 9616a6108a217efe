"""The feed requests, each one straight pass on one worker thread (see ARCHITECTURE.md,
"For-you request"); a for-you next page on the event loop itself (:meth:`Feeds.for_you_page`).

First page: the viewer (user, follows, blocks: one DB session) -> experiment assignment ->
what the viewer has seen and their features (one Redis round trip) -> candidates, filtered
once, blended, with their features (:mod:`serving.feed.candidates`) -> ranking (Ray Serve or
in-process, within ``ranker_timeout_ms``) -> re-ranking under the source quotas (the first
``RERANK_PAGES`` pages' positions) -> the first page; the rest of the list, the seen marks
and the exposure queued (one Redis round trip; the exposures are written in batches, off
the request path: :class:`~platform_services.bus.outbox.OutboxBuffer`). A next page is the cached
list, the viewer saved with it, and the same tail (a page near the re-ranked positions' end
re-ranks the next ones first and saves the list with them).
Every dependency failure degrades (:mod:`serving.feed.degrade`) instead of failing the
request. Trending and following share the page / cursor / exposure tail. The CPU work of for
you's first pages runs one page at a time per process (:class:`ComputeSlot`); a page waiting
on a remote ranker gives the slot up meanwhile.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import redis
from starlette.concurrency import run_in_threadpool

from candidate_gen import sources as src
from candidate_gen.catalog import Snapshot
from core.clock import now_ms
from core.events import ExperimentExposure
from core.metrics import cache_lookups
from platform_services import trending
from platform_services.media.delivery import PlaylistSigner
from serving.feed import candidates as cands
from serving.feed import cursor as cursors
from serving.feed import page_cache
from serving.feed.context import TrendingCache, UnknownUser, read_user_state, read_viewer
from serving.feed.debug import annotate
from serving.feed.degrade import RANKED_BY, Trace
from serving.feed.filters import Viewer, visible
from serving.feed.following import FollowingFeed
from serving.feed.render import MediaUrls, render
from serving.feed.rerank import RerankConfig, rerank, resume
from serving.feed.scoring import age_hours, cheap_scores
from serving.feed.services import FeedServices
from serving.ranking.backends import Ranked, RankerBackend
from serving.ranking.models import ModelUnavailable

FALLBACK_VERSION = "fallback:cheap-score"
# A safety net for a page whose ranker request waits for the pages behind it (one of them, or
# the slot's idle hook, always sends it; a call is bounded by ranker_timeout_ms).
COHORT_WAIT_S = 5.0
# Pages' worth of positions the re-ranking rules choose at a time: most lists are read for a
# page or two, and choosing all of a first page's 500 positions was ~0.6 ms of its CPU.
RERANK_PAGES = 3
# After the page cache failed, for-you next pages go to worker threads for this long: a Redis
# that hangs then holds the event loop for one timeout now and then, not for every page.
CACHE_RETRY_S = 5.0
__all__ = ["Feeds", "Page", "UnknownUser"]


@dataclass(frozen=True)
class Page:
    """A response body (:class:`serving.feed.schemas.FeedPage`) and its trace headers."""

    body: dict
    headers: dict[str, str]


class ComputeSlot:
    """One first page computes at a time per process. The GIL runs one thread at a time
    anyway; what more concurrency inside a process adds is pages interleaving (each one
    slower) and the ranker's call waiting for the GIL on its way out and back. Measured with
    6 concurrent clients on one process (a loaded 2-core machine): ranker time p50 45 -> 11
    ms, requests over budget 30 % -> 0 (fdfc587); processes (``api_workers``, one per core)
    are what add throughput, not threads. Cursor pages (a few ms, no ranker) never wait.

    The pages queued for the slot share a ranker call (a call costs as much CPU as a page's
    scoring: :mod:`serving.ranking.ray_serve`): a page that has queued its request while
    others wait to start steps out (:meth:`released`) and the last of them sends the call,
    holding the slot while it waits, so no page computes during a call. Back, a page goes
    before the pages not yet started, finishing work first; those start in the order they
    came. ``on_idle`` runs when the slot is left with no page waiting to start (the ranker
    backend's ``send``: a request queued by a page that stepped out always goes, even when
    the pages after it fail or rank nothing)."""

    def __init__(self, on_idle: Callable[[], None] = lambda: None) -> None:
        self._cond = threading.Condition()
        self._busy, self._returning = False, 0
        # Pages start in the order they asked (a ticket each): a wake-up of every waiter
        # lets the OS pick, and a page could wait behind later ones without bound.
        self._tickets, self._serving = 0, 0
        self._on_idle = on_idle

    @property
    def starting(self) -> int:
        """Pages waiting to start computing: tickets given and not yet served (read while
        holding the slot)."""
        return self._tickets - self._serving

    @contextmanager
    def hold(self, trace: Trace) -> Iterator[None]:
        """The slot for the block (the time waiting for it: the ``queue`` stage)."""
        with trace.stage("queue"):
            self._acquire(returning=False)
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Inside :meth:`hold`: the slot given up for the block, then taken back first."""
        self._release()
        try:
            yield
        finally:
            self._acquire(returning=True)

    def _acquire(self, returning: bool) -> None:
        with self._cond:
            if returning:
                self._returning += 1
                while self._busy:
                    self._cond.wait()
                self._returning -= 1
            else:
                ticket, self._tickets = self._tickets, self._tickets + 1
                while self._busy or self._returning or ticket != self._serving:
                    self._cond.wait()
                self._serving += 1
            self._busy = True

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()
            idle = not self.starting
        if idle:
            self._on_idle()


class Feeds:
    """The feed endpoints' logic over one process's :class:`FeedServices`."""

    def __init__(self, svc: FeedServices) -> None:
        self.svc, self.s = svc, svc.settings
        self.urls = MediaUrls(svc.blobs, PlaylistSigner.from_settings(svc.settings))
        self.trending_lists = TrendingCache(svc.redis)
        self.inflight = 0  # first pages admitted and not answered (serving.routes.feed.admit)
        self._cache_retry_at = 0.0  # monotonic time before which next pages avoid the loop
        self.slot = ComputeSlot(self._send_queued)
        self.rerank_cfg = RerankConfig(self.s.feed_explore_slots, self.s.feed_fresh_hours,
                                       self.s.feed_freshness_boost, self.s.feed_topic_window)

    @property
    def saturated(self) -> bool:
        """As many first pages in flight as the process should hold: shed the next one."""
        return self.inflight >= self.s.feed_max_inflight

    # --- for you ----------------------------------------------------------------------------

    async def for_you_page(self, user_id: int, page_size: int, cursor: str | None = None,
                           debug: bool = False) -> Page:
        """:meth:`for_you` from the event loop: a next page right there, a first page (or a
        next page while the cache is failing) on a worker thread. A next page is one read and
        one write of its cached list and no model: less work than the hop to a thread and
        back, which under load queues behind the threads' GIL turns (cached pages at 500/s on
        the ``bench serve`` world, local ranker: p50 387 -> 11 ms, API CPU 2.7 -> 2.3 ms a
        page)."""
        if cursor and time.monotonic() >= self._cache_retry_at:
            trace = Trace()
            body = self.next_page(user_id, cursor, page_size, trace, debug)
            if body is not None:
                return Page(body, trace.headers())
        return await run_in_threadpool(self.for_you, user_id, page_size, cursor, debug)

    def for_you(self, user_id: int, page_size: int, cursor: str | None = None,
                debug: bool = False) -> Page:
        """The next page of ``cursor``'s list, or a freshly ranked first page (also when the
        cache is unreachable). :class:`~serving.feed.cursor.CursorError`: a bad cursor.
        ``debug``: each item also carries how it got there (:mod:`serving.feed.debug`)."""
        trace = Trace()
        if cursor:
            body = self.next_page(user_id, cursor, page_size, trace, debug)
            if body is not None:
                return Page(body, trace.headers())
        with self.svc.sessions() as session, self.slot.hold(trace):
            viewer = read_viewer(session, user_id)
            # The experiment hook: the variant's aliases and pipeline parameters.
            assignment = self.svc.assignment(user_id, viewer.region)
            with trace.stage("viewer"):
                state = read_user_state(self.svc, user_id, trace)
            for view in self.svc.stale_features:  # defaults would be as good: say so
                trace.degrade("features", f"batch view {view}: past its TTL or not loaded")
            snap, now = self.svc.catalog.snapshot, now_ms()
            c = cands.gather(self.svc, self.trending_lists, viewer, state,
                             assignment.retrieval_alias, assignment.quotas, snap, now, trace)
            c.request.weights = assignment.score_weights
            trace.ranked = len(c.ids)
            scores, version = self._rank(c, assignment.ranker_alias, snap, now, trace)
            RANKED_BY.labels(assignment.ranker_alias, version).inc()
            cfg = self.rerank_cfg if assignment.explore_slots is None else replace(
                self.rerank_cfg, explore_slots=assignment.explore_slots)
            depth = RERANK_PAGES * page_size  # the rest when a page gets near (_rerank_ahead)
            with trace.stage("rerank"):
                order = rerank(scores, snap.owner[c.ids], snap.topic[c.ids],
                               age_hours(snap, c.ids, now), c.sources == src.CODE["explore"],
                               cfg, c.sources, c.quotas, depth)
            pending = page_cache.Pending.after(depth, len(order), c.quotas, cfg.explore_slots)
            ranked = page_cache.RankedList(
                user_id, c.ids[order], c.sources[order], version, assignment.variant,
                assignment.experiment, tuple(trace.degraded), viewer.followees, viewer.blocked,
                tuple((a.experiment, a.variant) for a in assignment.arms),
                np.asarray(scores, np.float32)[order], pending)
            body = self._first_page(ranked, page_size, trace, snap, viewer, debug)
        return Page(body, trace.headers())

    def _rank(self, c: cands.Candidates, alias: str, snap: Snapshot, now: int,
              trace: Trace) -> tuple[np.ndarray, str]:
        """The ranker's scores (its call within ``ranker_timeout_ms``), else the cheap
        fallback's. A request the backend queues goes with those of the pages waiting behind
        this one (:class:`ComputeSlot`): the last of them sends the call."""
        ranker = self.svc.ranker
        with trace.stage("ranking"):
            try:
                if ranker is None:
                    raise ModelUnavailable("no ranker backend")
                if len(c.ids):
                    pending = ranker.submit(alias, c.request, self.s.ranker_timeout_ms / 1000)
                    if not pending.done():  # queued (a local ranker has scored already)
                        self._await_call(pending, ranker)
                    scores, version = pending.result(timeout=0)
                    return np.asarray(scores, np.float64), version
            except Exception as exc:  # down, not loaded, or over the time budget
                trace.degrade("ranker", repr(exc))
        return cheap_scores(snap, c.ids, c.sources, now, self.s.feed_fresh_hours), \
            FALLBACK_VERSION

    def _await_call(self, pending: Future[Ranked], ranker: RankerBackend) -> None:
        """Step out while pages wait behind this one (they join the call, the last of them
        sends it); else send the call now, holding the slot."""
        if self.slot.starting and not ranker.batch_full:
            with self.slot.released():
                try:
                    pending.result(timeout=COHORT_WAIT_S)
                finally:
                    pending.cancel()  # unsent: it stays unsent
        else:
            ranker.send()

    def _send_queued(self) -> None:
        if self.svc.ranker is not None:
            self.svc.ranker.send()

    # --- trending and following -------------------------------------------------------------

    def trending_page(self, user_id: int, window: str, region: str | None, category: str | None,
                 page_size: int, cursor: str | None = None) -> Page:
        """Most engagement in ``window`` (by viewers of ``region``, videos of ``category``);
        without Redis, all-time views from the catalog."""
        trace = Trace(feed="trending")
        body = self.next_page(user_id, cursor, page_size, trace) if cursor else None
        if body is not None:
            return Page(body, trace.headers())
        with self.svc.sessions() as session:
            viewer = read_viewer(session, user_id)
            snap, n = self.svc.catalog.snapshot, self.s.feed_candidates
            with trace.stage("candidates"):
                try:
                    got = trending.top(self.svc.redis, window, region, category,
                                        n * cands.OVERFETCH)
                    ids = np.fromiter((v for v, _ in got), np.int64, len(got))
                except redis.RedisError as exc:
                    trace.degrade("trending", exc)
                    ids = _by_views(snap, category, n * cands.OVERFETCH)
            ids = ids[visible(snap, viewer, ids)][:n]
            ranked = self._plain_list(viewer, ids, "trending", f"trending:{window}")
            body = self._first_page(ranked, page_size, trace, snap, viewer)
        return Page(body, trace.headers())

    def following_page(self, user_id: int, page_size: int, cursor: str | None = None) -> Page:
        """The newest visible videos of the creators the user follows (hybrid push/pull
        fan-out, :mod:`serving.feed.following`)."""
        trace = Trace(feed="following")
        body = FollowingFeed(self.svc, self.urls).page(user_id, page_size, cursor, trace)
        return Page(body, trace.headers())

    @staticmethod
    def _plain_list(viewer: Viewer, ids: np.ndarray, source: str, version: str
                    ) -> page_cache.RankedList:
        return page_cache.RankedList(viewer.user_id, ids,
                                     np.full(len(ids), src.CODE[source], np.uint8), version,
                                     followees=viewer.followees, blocked=viewer.blocked)

    # --- pages ------------------------------------------------------------------------------

    def _first_page(self, ranked: page_cache.RankedList, page_size: int, trace: Trace,
                    snap: Snapshot, viewer: Viewer, debug: bool = False) -> dict:
        """The first page of a fresh list; the rest cached behind a cursor."""
        list_id = uuid.uuid4().hex
        keep = len(ranked.ids) > page_size
        expires = int(time.time()) + self.s.feed_cache_ttl_s if keep else None
        return self._page(list_id, ranked, 0, page_size, expires, trace, snap, viewer,
                          save=keep, debug=debug)

    def next_page(self, user_id: int, token: str, page_size: int, trace: Trace,
                  debug: bool = False) -> dict | None:
        """The page after ``token``; None when the cache is unreachable (start afresh).
        Raises :class:`~serving.feed.cursor.CursorError` for a bad cursor."""
        assert self.s.signing_secret is not None
        c = cursors.decode(self.s.signing_secret, token, user_id)
        with trace.stage("cache"):
            try:
                ranked = page_cache.load(self.svc.redis, c.list_id)
            except redis.RedisError as exc:
                self._cache_failed(trace, exc)
                return None
        hit = ranked is not None and ranked.user_id == user_id
        cache_lookups("feed_page", hit, not hit)
        if ranked is None or ranked.user_id != user_id:
            raise cursors.CursorError("cursor expired")
        for component in ranked.degraded:
            trace.degrade(component, "the cached list was built without it")
        viewer = Viewer(user_id, None, ranked.followees, ranked.blocked)
        snap = self.svc.catalog.snapshot
        ahead = self._rerank_ahead(ranked, c.offset, page_size, snap, trace)
        return self._page(c.list_id, ahead or ranked, c.offset, page_size, c.expires_s, trace,
                          snap, viewer, save=ahead is not None, debug=debug)

    def _rerank_ahead(self, ranked: page_cache.RankedList, offset: int, page_size: int,
                      snap: Snapshot, trace: Trace) -> page_cache.RankedList | None:
        """The list with the re-ranking rules applied to ``RERANK_PAGES`` more pages when
        this page or the next would reach past the positions they chose; None when they
        would not."""
        p = ranked.pending
        if p is None or p.done >= offset + 2 * page_size:
            return None
        with trace.stage("rerank"):
            ids, sources = ranked.ids, ranked.sources
            cfg = replace(self.rerank_cfg, explore_slots=p.explore_slots)
            depth = offset + RERANK_PAGES * page_size - p.done
            order = resume(p.done, snap.owner[ids], snap.topic[ids],
                           sources == src.CODE["explore"], cfg, sources, p.quotas, depth)
        # Only a first page's list is pending, and it has a score per id.
        return replace(ranked, ids=ids[order], sources=sources[order], scores=ranked.scores[order],
                       pending=page_cache.Pending.after(p.done + depth, len(ids), p.quotas,
                                                        p.explore_slots))

    def _page(self, list_id: str, ranked: page_cache.RankedList, offset: int, page_size: int,
              expires_s: int | None, trace: Trace, snap: Snapshot, viewer: Viewer,
              save: bool = False, debug: bool = False) -> dict:
        """Up to ``page_size`` still-visible videos from ``offset``, logged and rendered; a
        cursor to the rest while ``expires_s`` (the cached list's life) is set."""
        with trace.stage("page"):
            end, picked = offset, []
            while len(picked) < page_size and end < len(ranked.ids):
                chunk = np.arange(end, min(len(ranked.ids), end + page_size - len(picked)))
                ok = visible(snap, viewer, ranked.ids[chunk])  # a video may have gone since
                picked.extend(chunk[ok].tolist())
                end = int(chunk[-1]) + 1
            pos = np.asarray(picked, np.int64)
            ids, sources = ranked.ids[pos], ranked.sources[pos]
            try:
                saved = (list_id, ranked, max(1, expires_s - int(time.time()))) \
                    if save and expires_s is not None else None  # its life as it was
                page_cache.write(self.svc.redis, viewer.user_id, ids, now_ms(),
                                 self.s.feed_seen_max, saved)
            except redis.RedisError as exc:
                self._cache_failed(trace, exc)
                expires_s = None  # the rest is nowhere: this page is the whole list
            self._log_exposure(list_id, ranked, ids, sources, pos, trace)
            more = expires_s is not None and end < len(ranked.ids)
            token = None
            if more:
                assert self.s.signing_secret is not None and expires_s is not None
                token = cursors.encode(self.s.signing_secret,
                                       cursors.Cursor(list_id, viewer.user_id, end, expires_s))
            videos = render(snap, ids, sources, pos, self.urls, ranked.model_version, list_id)
            if debug:
                annotate(videos, ranked, pos, trace.degraded)
            return {"videos": videos, "next_cursor": token, "has_more": more}

    def _cache_failed(self, trace: Trace, exc: redis.RedisError) -> None:
        trace.degrade("cache", exc)
        self._cache_retry_at = time.monotonic() + CACHE_RETRY_S

    def _log_exposure(self, list_id: str, ranked: page_cache.RankedList, ids: np.ndarray,
                      sources: np.ndarray, positions: np.ndarray, trace: Trace) -> None:
        """One exposure per experiment arm the list was made for (one without any when none):
        logged only here, when a page is actually served (experiment analysis joins on it);
        queued, written with the process's others within ``feed_exposure_flush_ms``."""
        if not len(ids):
            return
        arms = ranked.arms or ((ranked.experiment, ranked.variant),)
        video_ids, names = ids.tolist(), [src.SOURCES[s] for s in sources.tolist()]
        latency, degraded = round(trace.elapsed_ms(), 3), trace.degraded
        self.svc.exposures.put(*(ExperimentExposure(
            user_id=ranked.user_id, request_id=list_id, experiment=experiment,
            variant=variant, model_version=ranked.model_version, video_ids=video_ids,
            sources=names, first_position=int(positions[0]), latency_ms=latency,
            degraded=degraded) for experiment, variant in arms))


def _by_views(snap: Snapshot, category: str | None, n: int) -> np.ndarray:
    """All-time views from the catalog: trending without Redis."""
    ids = np.flatnonzero(snap.owner >= 0)
    if category is not None:
        code = snap.topics.index(category) if category in snap.topics else -2
        ids = ids[snap.topic[ids] == code]
    return ids[np.argsort(-snap.views[ids], kind="stable")][:n]
