"""Prometheus plumbing every process shares: the cache counter, the registry a process
exposes, and the metrics port of a worker.

Each package defines its own metrics next to the code that moves them (``prometheus_client``
module-level objects: importing a module only registers them). What lives here is what several
layers use: :data:`CACHE` (the page cache, the feature near-cache, the in-memory item features
and the trending caches count into it, so one dashboard query gives every hit rate) and the
multiprocess switch: with ``PROMETHEUS_MULTIPROC_DIR`` set (``reelrank serve api`` with several
processes, :mod:`serving.launch`), every process writes its samples to files there and any of
them answers ``/metrics`` for all (``prometheus_client.multiprocess``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    multiprocess,
    start_http_server,
    values,
)

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CACHE = Counter("reelrank_cache_lookups", "Cache lookups by cache and result (hit|miss)",
                ["cache", "result"])


def cache_lookups(cache: str, hits: int, misses: int) -> None:
    """Count ``hits`` and ``misses`` of ``cache`` (hit rate = hits / (hits + misses))."""
    if hits:
        CACHE.labels(cache, "hit").inc(hits)
    if misses:
        CACHE.labels(cache, "miss").inc(misses)


def multiprocess_dir() -> str | None:
    """The sample directory when this process writes its samples to files, else ``None``.

    The environment variable alone does not say it: ``prometheus_client`` picks file-backed
    values once, when first imported, and libraries set the variable later on their own
    (importing ``feast.metrics`` points it at a temporary directory, which Ray's processes
    then inherit): a process that started without it keeps its in-memory registry.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or None


def process_registry() -> CollectorRegistry:
    """What this process's ``/metrics`` shows: every process's samples in multiprocess mode,
    else this process's default registry."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    return registry


def prepare_multiprocess_dir(path: Path) -> None:
    """An empty sample directory, named in the environment the child processes inherit. Must
    run before they start (their ``prometheus_client`` picks its value files at import)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)


def process_exited() -> None:
    """Drop this process's ``live*`` gauges from the shared directory (at shutdown)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)


def serve_worker_metrics(port: int, host: str = "127.0.0.1") -> WSGIServer | None:
    """``/metrics`` of this worker process on ``port`` (0: off), from a daemon thread; the
    server, to ``shutdown()`` when a caller needs the port back. A port in use (a second member
    of the same group on one host) is logged, not fatal: the worker's job comes first.

    Always this process's own samples (Prometheus scrapes each worker's port): a worker that
    inherited a multiprocess directory (``reelrank demo`` imports Feast, which sets one) would
    otherwise show the sums over every process that ever wrote there."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        log.warning("worker metrics not served: port %d: %s", port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    return server
