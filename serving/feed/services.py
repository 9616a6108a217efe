"""Everything the feed needs, built once per API process and kept fresh in the background.

:meth:`FeedServices.start` loads the catalog, the retrieval champion and its FAISS index, the
online feature reader with its in-memory item features, and the ranker backend (Ray Serve or
in-process). Any of them may be missing (a fresh install, a dependency down): the feed then
serves degraded and the loaders keep retrying. A background thread refreshes the catalog
every ``catalog_refresh_s``, brings each loaded ANN index in step with it (new uploads in,
with the vectors the embed worker stored; removed / private videos out) and the item features
with the catalog and the last materialization. Each API worker process has its own copy of
all of it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.orm import Session, sessionmaker

from candidate_gen.ann import AnnRetriever, load_retriever
from candidate_gen.catalog import Catalog, Snapshot
from candidate_gen.fresh_items import load_stored
from core.clock import HOUR_MS, now_ms
from core.config import Settings
from experiments.assignment import Assignment, ExperimentAssigner, assign
from features.freshness import export_ages, stale_views
from features.item_table import ItemTable
from platform_services.bus.outbox import OutboxBuffer
from platform_services.storage.blobs import BlobStore, open_blob_store
from platform_services.storage.cache import redis_client
from serving.ranking.backends import LocalRanker, RankerBackend
from serving.ranking.models import AliasModels, ModelUnavailable

if TYPE_CHECKING:
    from features.ranking_read import RankingFeatures

log = logging.getLogger(__name__)
# A Redis that stops answering must cost a request a bounded time, not hang it.
REDIS_TIMEOUT_S = 0.25


@dataclass
class FeedServices:
    settings: Settings
    sessions: sessionmaker[Session]
    catalog: Catalog
    redis: redis.Redis
    blobs: BlobStore
    exposures: OutboxBuffer  # every feed page's exposure, written in batches
    retrievers: AliasModels[AnnRetriever] = field(init=False)
    ranker: RankerBackend | None = None
    features: RankingFeatures | None = None
    features_share_redis: bool = False  # the online store is the feed's Redis: one round trip
    assigner: Callable[[int, str | None], Assignment] = assign
    experiments: ExperimentAssigner | None = None
    # Batch views served past their TTL, or never loaded into the item table (degraded).
    stale_features: tuple[str, ...] = ()
    _features_synced: tuple[Snapshot, object] | None = None  # what the item table matches
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, settings: Settings, sessions: sessionmaker[Session]) -> FeedServices:
        """Build and warm everything (blocking; call it from a thread in an event loop)."""
        from training import registry

        registry.connect(settings.mlflow_tracking_uri)
        # Concurrent requests are CPU-bound Python threads; the threads that wait on I/O (the
        # Ray router receiving a ranker reply, Redis replies) must get the GIL back within a
        # millisecond, not the default 5, or a busy process misses its ranker budget.
        sys.setswitchinterval(0.001)
        svc = cls(
            settings=settings,
            sessions=sessions,
            catalog=Catalog(sessions),
            redis=redis_client(settings.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                               socket_connect_timeout=REDIS_TIMEOUT_S,
                               retry=Retry(NoBackoff(), 0)),  # fail fast, then degrade
            blobs=open_blob_store(settings),
            exposures=OutboxBuffer(sessions, "exposures",
                                   settings.feed_exposure_flush_ms / 1000),
        )
        try:
            svc.catalog.refresh()
        except Exception:  # the refresh loop retries; until then the feeds are empty
            log.exception("feed: catalog not loaded")
        svc.retrievers = AliasModels.started(
            settings.retrieval_model, svc._load_retriever, settings.model_poll_s,
            owner="feed: no ANN retrieval yet, serving popularity + following")
        svc.features = _feature_reader(settings)
        svc.features_share_redis = (settings.feature_online_url or settings.redis_url) \
            == settings.redis_url
        svc.sync_features()
        svc.ranker = _ranker(settings)
        svc.experiments = ExperimentAssigner.started(sessions, settings.experiments_refresh_s,
                                                     svc.warm_aliases)
        svc.assigner = svc.experiments.assign
        svc._thread = threading.Thread(target=svc._refresh_loop, name="feed-refresh",
                                       daemon=True)
        svc._thread.start()
        return svc

    def assignment(self, user_id: int, region: str | None = None) -> Assignment:
        """The experiment hook: the user's variants, so the aliases and parameters serving
        them."""
        return self.assigner(user_id, region)

    def warm_aliases(self, ranker: set[str], retrieval: set[str]) -> None:
        """Ask the model pollers for the aliases running variants name, so they load before
        a request needs them (Ray replicas load theirs on their first request)."""
        for models, aliases in ((self.retrievers, retrieval),
                                (getattr(self.ranker, "models", None), ranker)):
            for alias in aliases if models is not None else ():
                with contextlib.suppress(ModelUnavailable):  # now wanted: the poller loads it
                    models.get(alias)

    def sync_features(self) -> None:
        """The in-memory item features in step with the catalog and the last materialization
        (a full reload after a new one, else the new videos and creators only)."""
        if self.features is None:
            return
        snap = self.catalog.snapshot
        try:
            mark = self.features.mark()
            synced = self._features_synced
            # Same catalog, same materialization (most seconds): nothing to load.
            if synced is None or synced[0] is not snap or synced[1] != mark:
                videos = np.flatnonzero(snap.owner >= 0)
                read = self.features.sync(videos, np.unique(snap.owner[videos]), mark)
                self._features_synced = (snap, mark)
                if read:
                    log.info("item features: %d entities read from the online store", read)
        except Exception:
            log.exception("feed: item features not refreshed; serving the previous ones")
            if self.features.table.mark is None:  # no previous ones: every page on defaults
                self.stale_features = tuple(view for view, _, _ in ItemTable.VIEWS)
            return
        try:
            export_ages(self.settings)  # the per-view age gauge on this process's /metrics
            stale = tuple(stale_views(self.settings))
        except Exception:
            log.exception("feed: batch feature ages unreadable")
            return
        if stale != self.stale_features:
            log.warning("feed: batch features older than their TTL: %s", ", ".join(stale) or
                        "none any more")
        self.stale_features = stale

    def _fresh_since(self) -> int:
        return now_ms() - int(self.settings.feed_fresh_hours * HOUR_MS)

    def _load_retriever(self, uri: str) -> AnnRetriever:
        """A retrieval version brought in step with the catalog before it serves."""
        retriever = load_retriever(uri, self.settings.path("indexes"))
        self._sync(retriever, self.catalog.snapshot, self._fresh_since())
        return retriever

    def _sync(self, retriever: AnnRetriever, snap: Snapshot, since: int) -> tuple[int, int]:
        """New uploads take the vectors the embed worker stored (``video_media``)."""
        return retriever.sync(snap, since, partial(load_stored, self.catalog.sessions),
                              int(self.settings.embed_wait_s * 1000))

    def sync_indexes(self) -> None:
        snap, since = self.catalog.snapshot, self._fresh_since()
        for alias in list(self.retrievers.versions()):
            try:
                added, removed = self._sync(self.retrievers.get(alias).model, snap, since)
            except ModelUnavailable:
                continue
            if added or removed:
                log.info("ANN @%s: +%d -%d videos", alias, added, removed)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.settings.catalog_refresh_s):
            started = time.perf_counter()
            try:
                self.catalog.refresh()
                self.sync_indexes()
                self.sync_features()
            except Exception:
                log.exception("feed: catalog refresh failed; serving the previous snapshot")
            log.debug("feed refresh took %.3f s", time.perf_counter() - started)

    async def close(self) -> None:
        self._stop.set()
        if self.experiments is not None:
            self.experiments.stop()
        self.retrievers.stop()
        if self.ranker is not None:
            await self.ranker.close()
        if self.features is not None:
            self.features.close()
        self.exposures.close()
        self.redis.close()


def _feature_reader(settings: Settings) -> RankingFeatures | None:
    try:
        from features.ranking_read import RankingFeatures

        return RankingFeatures(settings)
    except Exception as exc:
        log.warning("feed: online features unavailable (%s); ranking on defaults", exc)
        return None


def _ranker(settings: Settings) -> RankerBackend | None:
    try:
        if settings.ranker_backend == "ray":
            from serving.ranking.ray_serve import RayRanker

            return RayRanker(settings)
        return LocalRanker(settings.ranker_model, settings.model_poll_s,
                           settings.ranker_precision)
    except Exception as exc:
        log.exception("feed: ranker backend did not start (%s); ranking by cheap scores", exc)
        return None
