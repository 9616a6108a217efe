"""The ranker on Ray Serve: replicas, batching on both sides of the hop, hot reload.

Each replica holds the models of the aliases it has been asked for and polls the registry
every ``model_poll_s``; when an alias moves it loads the new version beside the old one and
swaps (see :mod:`serving.ranking.models`), so a deploy needs no restart and fails no request.

A call through Serve's handle costs ~4.4 ms of CPU across the caller, the replica and Ray
whatever its payload (``benchmarks/results/ray_hop.md``), about as much as scoring a page. So
each replica also listens on a socket of its own (``ranker_transport``), publishes its URL in
Ray's key-value store, and the API sends its calls there (:mod:`serving.ranking.sockets`); the
handle stays the path while no socket is reachable. And the first pages an API process
computes back to back share one call (:class:`CallBatch`; the pipeline sends it when
no page waits behind the last one: no wait when the process is idle, several pages a hop
under load). On the replica, requests that arrive within ``ranker_batch_wait_ms``
(of any API process) are scored together, up to ``ranker_max_batch_size`` requests: one
forward pass over all their candidates.

:class:`RayRanker` is the API side: it starts local Ray with the machine's cores (or joins
``ray_address``), starts Serve without its HTTP proxy (the API is the only front door),
deploys the app unless it is already running, and on close stops exactly what it started
(on a cluster the deployment is left running for the other API processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import ray
from prometheus_client import Counter, Histogram
from ray.experimental import internal_kv

from core.config import RankerTransport, Settings
from serving.ranking.backends import (
    Ranked,
    RankRequest,
    Result,
    Scorer,
    load_scorer,
    resolve,
    score_many,
)
from serving.ranking.models import AliasModels
from serving.ranking.sockets import EndpointDown, ReplicaSockets, close_server, listen

with warnings.catch_warnings():
    # Ray Serve's own config models use a form pydantic 2 deprecates, and every process that
    # imports it (the API and each of its workers) printed the warning. Scoped to the import:
    # Feast's import sets every DeprecationWarning to "once", ahead of any global filter.
    warnings.filterwarnings("ignore", "Using extra keyword arguments on `Field` is deprecated")
    serve = importlib.import_module("ray.serve")

APP = "reelrank-ranker"
# Where each replica publishes its socket's URL: Ray's own key-value store (in the GCS, which
# every process of the cluster reaches), the one registry a Ray deployment already has.
KV_NAMESPACE, ENDPOINT_PREFIX = "reelrank", "ranker-endpoint/"
# Requests (first pages) per call from an API process: how much of the hop batching saves.
CALL_REQUESTS = Histogram("reelrank_ranker_call_requests", "First pages per ranker call",
                          buckets=(1, 2, 3, 4, 6, 8, 12, 16))
CALLS = Counter("reelrank_ranker_calls_total", "Calls to the ranker deployment, by path "
                "(socket: straight to a replica; handle: through Ray Serve's router)", ["path"])
# Serve's controller loop and each replica's metrics export run every 100 ms by default:
# 42 ms of CPU a second on an idle 2-core machine (113 -> 71 ms/s across Ray's processes with
# both at 1 s, measured with the ranker's stand-in deployment). Once a second is soon enough
# for a fixed number of replicas: a replaced replica or a deploy is seen within a second more.
# A local Ray only (a cluster is configured by whoever starts it); the environment overrides.
QUIET_SERVE_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1",
                   "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}
WARM_ROWS, WARM_ROUNDS = 512, 4  # a first page's candidates; rounds of probes per replica


@serve.deployment(max_ongoing_requests=64, health_check_period_s=5)
class RankerDeployment:
    """One replica: ``score([(alias, request), ...]) -> [(scores, "name/version") or the
    exception, ...]``."""

    # Ray runs an async constructor on the replica's loop: the socket server lives there.
    async def __init__(self, model_name: str, tracking_uri: str,  # type: ignore[misc]
                       poll_s: float, threads: int, precision: str,
                       transport: RankerTransport = "unix",
                       warm_aliases: tuple[str, ...] = ("champion",)) -> None:
        import sys

        import torch

        from training import registry

        registry.connect(tracking_uri)
        torch.set_num_threads(threads)
        # A new version loads on the poller thread (Python-heavy: registry, artifacts); hand
        # the GIL back to the scoring thread every 1 ms, not 5, so a reload does not stall
        # the requests in flight past their budget.
        sys.setswitchinterval(0.001)
        # A missing model is not fatal: the API falls back until it loads.
        self.models: AliasModels[Scorer] = AliasModels.started(
            model_name, partial(load_scorer, precision=precision), poll_s, warm_aliases,
            owner="ranker replica")
        self._server, self._url, self._key = None, None, ""
        if transport != "handle":
            context = serve.get_replica_context()
            replica = context.replica_id.unique_id
            self._server, self._url = await listen(
                self.score, transport, ray.util.get_node_ip_address(), replica)
            self._key = publish(context.app_name, replica, self._url)

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose socket stopped serving is replaced."""
        if self._server is not None and not self._server.is_serving():
            raise RuntimeError(f"the ranker socket {self._url} is closed")

    def __del__(self) -> None:
        """Serve's shutdown of the replica: its endpoint withdrawn, the socket closed (and its
        file removed)."""
        if getattr(self, "_key", ""):
            with contextlib.suppress(Exception):
                internal_kv._internal_kv_del(self._key, namespace=KV_NAMESPACE)
        close_server(getattr(self, "_server", None), getattr(self, "_url", None))

    def reconfigure(self, config: dict) -> None:
        """``user_config`` (from the settings): micro-batch size and wait, changeable without a
        restart."""
        self._batch.set_max_batch_size(int(config["max_batch_size"]))
        self._batch.set_batch_wait_timeout_s(float(config["batch_wait_ms"]) / 1000)

    async def score(self, requests: list[tuple[str, RankRequest]]) -> list[Result]:
        """One API call's requests, each into the micro-batch (with other callers' too)."""
        return list(await asyncio.gather(*(self._batch(r) for r in requests)))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0005)
    async def _batch(self, requests: list[tuple[str, RankRequest]]) -> list[Result]:
        # On the replica's loop: a forward pass is a few ms, and every hand-off between
        # threads or processes costs a scheduling delay on a busy machine; requests arriving
        # meanwhile queue for the next batch.
        return score_many(self.models, requests)


class RayRanker:
    """The API's handle on the deployment."""

    def __init__(self, settings: Settings) -> None:
        # ``owns_ray``: this process started a local Ray (and stops it); ``connected``: it
        # joined one (``ray_address``: a cluster, or the local Ray of ``reelrank serve api``'s
        # parent process) and only disconnects.
        self.connected = not ray.is_initialized()
        self.owns_ray = self.connected and not settings.ray_address
        if self.connected:
            if settings.ray_address:
                ray.init(address=settings.ray_address, log_to_driver=False)
            else:
                for name, value in QUIET_SERVE_ENV.items():  # Ray's processes inherit them
                    os.environ.setdefault(name, value)
                ray.init(num_cpus=settings.ray_num_cpus or os.cpu_count(),
                         include_dashboard=False, log_to_driver=False)
        deploy = APP not in _running_apps()
        # On a shared cluster the deployment outlives any one API process: deploy it if it is
        # missing, never delete it. Locally it lives and dies with the process that made it.
        self.owns_app = deploy and not settings.ray_address
        if deploy:
            serve.start(proxy_location="Disabled")
            # Replicas sized to the cores: one replica scores one batch at a time on one thread,
            # so concurrent first pages of several API processes need as many as there are CPUs.
            cpus = int(ray.cluster_resources().get("CPU", 1))
            replicas = settings.ranker_replicas or max(1, int(cpus // settings.ranker_num_cpus))
            deployment = RankerDeployment.options(
                num_replicas=replicas,
                ray_actor_options={"num_cpus": settings.ranker_num_cpus, "runtime_env": {
                    # The replica's user code on its main loop: one thread hop less a call.
                    "env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}},
                user_config={"max_batch_size": settings.ranker_max_batch_size,
                             "batch_wait_ms": settings.ranker_batch_wait_ms},
                # No access-log line per call: the API logs and times each request already.
                logging_config={"enable_access_log": False},
            )
            threads = max(1, int(settings.ranker_num_cpus))
            serve.run(deployment.bind(settings.ranker_model, settings.mlflow_tracking_uri,
                                      settings.model_poll_s, threads,
                                      precision=settings.ranker_precision,
                                      transport=settings.ranker_transport),
                      name=APP, route_prefix=None)
        # The cheapest handle path (measured in benchmarks/ray_hop.py): the request goes
        # by value over the replica's gRPC port with plain pickle, instead of as a Ray task
        # through the object store with cloudpickle; it costs the API process about half
        # the CPU per call. The payload is numpy matrices (RankRequest's wire form).
        self.handle = serve.get_app_handle(APP).options(
            _by_reference=False, request_serialization="pickle",
            response_serialization="pickle")
        # The replicas' sockets, as published (none while the replicas are down, or if whoever
        # deployed them chose ``handle``: the calls go through the handle meanwhile).
        self.sockets: ReplicaSockets | None = None
        if settings.ranker_transport != "handle":
            self.sockets = ReplicaSockets(partial(published, APP))
            self.sockets.start()
        self._warm()
        self.batch = CallBatch(self.handle, settings.ranker_max_batch_size, self.sockets)

    def _warm(self) -> None:
        """Calls before the first request: a replica's first few full-size requests
        (measured: 25-40 ms each, then 11) must not be charged to a user's time budget. They
        go where calls will go: each replica's socket, ``WARM_ROUNDS`` times; the handle gets
        one round (its router set up for the fallback), or every round when there is no
        socket: concurrent probes, which the router spreads over the replicas."""
        probe = [("champion", RankRequest({"video_id": np.zeros(WARM_ROWS, np.int64)},
                                          {"user_id": 0}))]
        sockets = [partial(self.sockets.call, probe, 60, url=url)
                   for url in self.sockets.urls] if self.sockets else []
        with contextlib.suppress(Exception):
            for round_ in range(WARM_ROUNDS):
                for call_socket in sockets:
                    call_socket()
                if round_ and sockets:
                    continue
                calls = [self.handle.score.remote(probe) for _ in range(2 * _replica_count())]
                for call in calls:
                    call.result(timeout_s=60)

    def submit(self, alias: str, request: RankRequest, timeout_s: float) -> Future[Ranked]:
        """Queued for the next call (:meth:`send`)."""
        return self.batch.add(alias, request, timeout_s)

    def send(self) -> None:
        self.batch.send()

    @property
    def batch_full(self) -> bool:
        return self.batch.full

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        if self.sockets is not None:
            self.sockets.close()
        with contextlib.suppress(Exception):
            if self.owns_app:
                serve.delete(APP)
            if self.owns_ray:
                serve.shutdown()
            if self.connected:
                ray.shutdown()


@dataclass
class _Queued:
    alias: str
    request: RankRequest
    timeout_s: float
    future: Future[Ranked]


class CallBatch:
    """The ranking requests an API process's pages have queued for one call to the
    deployment (:meth:`send`). The pipeline decides when it goes (the last page of the pages
    computing together sends it: :class:`serving.feed.pipeline.ComputeSlot`). A request
    whose caller gave up is not sent; a call past its budget (the sum of its requests') fails
    each request in it (through the handle it is cancelled, which frees the replica's slot; on
    a socket the connection is closed and the late answer dropped)."""

    def __init__(self, handle: Any, max_batch: int, sockets: ReplicaSockets | None = None
                 ) -> None:
        self._handle, self.max_batch, self._sockets = handle, max_batch, sockets
        self._lock = threading.Lock()
        self._queued: list[_Queued] = []

    def add(self, alias: str, request: RankRequest, timeout_s: float) -> Future[Ranked]:
        future: Future[Ranked] = Future()
        with self._lock:
            self._queued.append(_Queued(alias, request, timeout_s, future))
        return future

    @property
    def full(self) -> bool:
        return len(self._queued) >= self.max_batch

    def send(self) -> None:
        """The queued requests as one call, on the caller's thread, each completed when it
        returns (nothing queued: nothing sent)."""
        with self._lock:
            batch, self._queued = self._queued, []
        batch = [q for q in batch if q.future.set_running_or_notify_cancel()]
        if not batch:
            return
        CALL_REQUESTS.observe(len(batch))
        try:
            # Each request's budget, in sequence: the call does the work of that many calls
            # made one after the other, as the pages would have (the last of k pages waits
            # as long either way).
            got = self._call([(q.alias, q.request) for q in batch],
                             sum(q.timeout_s for q in batch))
        except Exception as exc:  # down, or past the budget
            for q in batch:
                q.future.set_exception(exc)
            return
        for q, one in zip(batch, got, strict=True):
            resolve(q.future, one)

    def _call(self, requests: list[tuple[str, RankRequest]], timeout_s: float
              ) -> list[Result]:
        """Straight to a replica's socket; through the handle when there is none, or the one
        chosen cannot be reached (nothing was scored: Serve routes the call to a live one)."""
        if self._sockets is not None:
            with contextlib.suppress(EndpointDown):
                got = self._sockets.call(requests, timeout_s)
                CALLS.labels("socket").inc()
                return got
        CALLS.labels("handle").inc()
        response = self._handle.score.remote(requests)
        try:
            return response.result(timeout_s=timeout_s)
        except TimeoutError:
            response.cancel()  # frees the replica's slot
            raise


def publish(app: str, replica: str, url: str) -> str:
    """``url`` recorded as where ``replica`` of ``app`` takes calls; returns its key."""
    key = f"{ENDPOINT_PREFIX}{app}/{replica}"
    internal_kv._internal_kv_put(key, url, namespace=KV_NAMESPACE)
    return key


def published(app: str) -> set[str]:
    """The socket URLs ``app``'s replicas have published (a killed replica's stays until its
    URL fails once: :class:`ReplicaSockets` then ignores it)."""
    keys = internal_kv._internal_kv_list(f"{ENDPOINT_PREFIX}{app}/", namespace=KV_NAMESPACE)
    urls = (internal_kv._internal_kv_get(k, namespace=KV_NAMESPACE) for k in keys)
    return {url.decode() for url in urls if url}


def _replica_count() -> int:
    """Replicas of the ranker deployment that are running (at least 1)."""
    with contextlib.suppress(Exception):
        deployments = serve.status().applications[APP].deployments.values()
        return max(1, sum(d.replica_states.get("RUNNING", 0) for d in deployments))
    return 1


def _running_apps() -> set[str]:
    with contextlib.suppress(Exception):
        return set(serve.status().applications)
    return set()
