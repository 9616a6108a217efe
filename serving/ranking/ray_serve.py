"""The ranker on Ray Serve: replicas, micro-batching with ``@serve.batch``, hot reload.

Each replica holds the models of the aliases it has been asked for and polls the registry
every ``model_poll_s``; when an alias moves it loads the new version beside the old one and
swaps (see :mod:`serving.ranking.models`), so a deploy needs no restart and fails no request.
Concurrent requests that arrive within ``ranker_batch_wait_ms`` are scored together, up to
``ranker_max_batch_size`` requests (one forward pass over all their candidates).

:class:`RayRanker` is the API side: it starts local Ray with the machine's cores (or joins
``ray_address``), starts Serve without its HTTP proxy (the API is the only front door),
deploys the app unless it is already running, and on close stops exactly what it started
(on a cluster the deployment is left running for the other API processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import numpy as np
import ray
from ray import serve

from core.config import Settings
from serving.ranking.backends import RankRequest, Result, Scorer, load_scorer, result, score_many
from serving.ranking.models import AliasModels

APP = "reelrank-ranker"
WARM_ROWS, WARM_ROUNDS = 512, 4  # a first page's candidates; rounds of probes per replica


@serve.deployment(max_ongoing_requests=64, health_check_period_s=5)
class RankerDeployment:
    """One replica: ``score(alias, frame) -> (scores, "name/version")``."""

    def __init__(self, model_name: str, tracking_uri: str, poll_s: float, threads: int,
                 precision: str, warm_aliases: tuple[str, ...] = ("champion",)
                 ) -> None:
        import sys
        from functools import partial

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

    def reconfigure(self, config: dict) -> None:
        """``user_config`` (from the settings): micro-batch size and wait, changeable without a
        restart."""
        self._batch.set_max_batch_size(int(config["max_batch_size"]))
        self._batch.set_batch_wait_timeout_s(float(config["batch_wait_ms"]) / 1000)

    async def score(self, alias: str, request: RankRequest) -> Result:
        return await self._batch((alias, request))

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
                                      precision=settings.ranker_precision),
                      name=APP, route_prefix=None)
        # The cheapest handle path (measured in benchmarks/ray_hop.py): the request goes
        # by value over the replica's gRPC port with plain pickle, instead of as a Ray task
        # through the object store with cloudpickle; it costs the API process about half
        # the CPU per call. The payload is numpy matrices (RankRequest's wire form).
        self.handle = serve.get_app_handle(APP).options(
            _by_reference=False, request_serialization="pickle",
            response_serialization="pickle")
        self._warm()

    def _warm(self) -> None:
        """Calls through the handle before the first request: setting up its router, reaching
        each replica and a replica's first few full-size requests (measured: 25-40 ms each,
        then 11) must not be charged to a user's time budget. Concurrent probes reach every
        replica (the router sends each to the least busy)."""
        probe = RankRequest({"video_id": np.zeros(WARM_ROWS, np.int64)}, {"user_id": 0})
        with contextlib.suppress(Exception):
            for _ in range(WARM_ROUNDS):
                calls = [self.handle.score.remote("champion", probe)
                         for _ in range(2 * _replica_count())]
                for call in calls:
                    call.result(timeout_s=60)

    def score(self, alias: str, request: RankRequest, timeout_s: float
              ) -> tuple[np.ndarray, str]:
        """From the request's worker thread; past ``timeout_s`` the call is cancelled (the
        replica's slot freed) and ``TimeoutError`` raised."""
        response = self.handle.score.remote(alias, request)
        try:
            return result(response.result(timeout_s=timeout_s))
        except TimeoutError:
            response.cancel()
            raise

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            if self.owns_app:
                serve.delete(APP)
            if self.owns_ray:
                serve.shutdown()
            if self.connected:
                ray.shutdown()


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
