"""``reelrank bench ray-hop``: what one call to the ranker's Ray Serve deployment costs beyond
the scoring itself, per handle path.

A stand-in deployment with the ranker's shape (``score(alias, request)`` through
``@serve.batch``, replicas on the Ray CPUs, user code on the replica's loop) returns zeros, so
the figures are the hop alone: the caller's wall time and the CPU per call of every process
involved (the API process: its request thread and Serve's router thread; the replicas; the
rest of Ray: raylet, GCS, Serve's controller, agents), for a first page's request of 500
candidates with the ranker's real columns, sent one after another from a worker thread as
the feed does. The replica side counts: a path that is cheap for the caller can move the
work into the replica, which shares the same cores. Paths: the default handle (a Ray actor
task, arguments through the object store, cloudpickle) and by value over the replica's gRPC
port (``_by_reference=False``), with cloudpickle or plain pickle; and the replica's own
socket (:mod:`serving.ranking.sockets`, ``ranker_transport=unix``), where Serve deploys the
replicas but the call does not pass through it.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil

from benchmarks.report import table, write_report
from serving.ranking.backends import RankRequest
from serving.ranking.ray_serve import publish, published
from serving.ranking.sockets import ReplicaSockets, close_server, listen

APP = "reelrank-bench-hop"
PATHS = {
    "by reference (Ray task), cloudpickle": {},
    "by value (gRPC), cloudpickle": {"_by_reference": False},
    "by value (gRPC), pickle": {"_by_reference": False, "request_serialization": "pickle",
                                "response_serialization": "pickle"},
}
SOCKET = "replica's socket (unix), msgpack"


def first_page_request(n: int, seed: int = 0) -> RankRequest:
    """A request shaped like a first page's: every ranker column, ``n`` candidates."""
    from features import schema

    rng = np.random.default_rng(seed)
    items: dict[str, np.ndarray] = {"video_id": rng.integers(0, 100_000, n)}
    for c in schema.ITEM_COLUMNS:
        items[c] = rng.random(n)
    return RankRequest(items, {c: 1.0 for c in schema.USER_COLUMNS} | {"user_id": 5})


def _deploy(cpus: int):  # noqa: ANN202 - a DeploymentHandle
    from ray import serve

    @serve.deployment(max_ongoing_requests=64)
    class Echo:
        async def __init__(self) -> None:  # type: ignore[misc]
            """Listens and publishes its socket as the ranker's replicas do."""
            replica = serve.get_replica_context().replica_id.unique_id
            self._server, self.url = await listen(self.score_all, "unix", "", replica)
            publish(APP, replica, self.url)

        def __del__(self) -> None:
            close_server(self._server, self.url)

        async def score_all(self, requests: list) -> list:
            return list(await asyncio.gather(*(self._batch(r) for r in requests)))

        async def score(self, alias: str, request: RankRequest) -> tuple[np.ndarray, str]:
            return await self._batch((alias, request))

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0005)
        async def _batch(self, requests: list) -> list:
            return [(np.zeros(len(r), np.float32), "stand-in/1") for _, r in requests]

    serve.start(proxy_location="Disabled")
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    return serve.run(Echo.options(num_replicas=cpus, ray_actor_options={
        "num_cpus": 1, "runtime_env": {"env_vars": env}}).bind(), name=APP, route_prefix=None)


def _call(method, request: RankRequest) -> object:  # noqa: ANN001 - a handle's method
    return method.remote("champion", request).result(timeout_s=10)


def _ray_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's Ray children: the replicas, and the rest."""
    out = {"replicas": 0.0, "ray": 0.0}
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            role = "replicas" if "ServeReplica" in " ".join(p.cmdline()) else "ray"
            out[role] += t.user + t.system
        except psutil.Error:  # a process that ended meanwhile
            continue
    return out


def _measure(call, calls: int) -> tuple[float, ...]:  # noqa: ANN001
    """(p50, p99, mean wall ms, caller, replica, other Ray, total CPU ms) per call after a
    warm-up."""
    for _ in range(20):
        call()
    walls = np.empty(calls)
    ray0, cpu0 = _ray_cpu(), time.process_time()
    for i in range(calls):
        t = time.perf_counter()
        call()
        walls[i] = time.perf_counter() - t
    caller = (time.process_time() - cpu0) / calls * 1000
    ray1 = _ray_cpu()
    replicas, other = ((ray1[k] - ray0[k]) / calls * 1000 for k in ("replicas", "ray"))
    w = walls * 1000
    return (float(np.median(w)), float(np.quantile(w, 0.99)), float(w.mean()), caller,
            replicas, other, caller + replicas + other)


def run_bench(calls: int, candidates: int, rounds: int, out: Path) -> Path:
    import ray

    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        handle = _deploy(cpus)
        request = first_page_request(candidates)
        paths = {name: partial(_call, handle.options(**options).score, request)
                 for name, options in PATHS.items()}
        sockets = ReplicaSockets(partial(published, APP))
        sockets.refresh()
        paths[SOCKET] = lambda: sockets.call([("champion", request)], 10)
        rows: dict[str, list[tuple[float, ...]]] = {p: [] for p in paths}
        for _ in range(rounds):  # interleaved, so a noisy spell hits every path alike
            for name, call in paths.items():
                rows[name].append(_measure(call, calls))
        sockets.close()
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    load = os.getloadavg()
    body = [
        f"{calls} sequential calls per path and round, {rounds} rounds interleaved; a request "
        f"of {candidates} candidates with the ranker's columns; stand-in replicas that return "
        f"zeros (the hop alone). Median over rounds. CPU per call: `caller` the API-side "
        f"process (request + router threads), `replicas` the {cpus} replica processes, `ray` "
        f"the rest of Ray (raylet, GCS, Serve's controller, agents: mostly what they burn "
        f"whether or not calls arrive, spread over the calls), `total` their sum. Load "
        f"average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {cpus} cores.",
        "",
        table(["path", "wall p50 ms", "wall p99 ms", "wall mean ms", "caller CPU ms",
               "replicas CPU ms", "ray CPU ms", "total CPU ms"],
              [[name, *(float(np.median([r[k] for r in got])) for k in range(7))]
               for name, got in rows.items()]),
    ]
    return write_report(out.stem, "Ray Serve hop: cost per ranker call by path",
                        "\n".join(body), out.parent)
