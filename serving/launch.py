"""The API as a server: uvicorn with ``api_workers`` processes (default: the machine's cores).

Each worker process builds its own feed services (catalog, ANN index, item features). The
ranker stays one Ray Serve deployment: with a local Ray (no ``ray_address``) and several
workers, this process starts Ray and the deployment once, before the workers, and hands them
its address, so every worker's requests reach the same replicas and are micro-batched
together; at the end it stops what it started. With one worker the API process starts Ray
itself, as before.

Metrics: with several workers, ``PROMETHEUS_MULTIPROC_DIR`` (``<var_dir>/prometheus-api``,
emptied at each start) is set for the worker processes only (after Ray has started, so Ray's
own processes keep their metrics to themselves): each writes its samples there and whichever
worker answers ``/metrics`` reports all of them (:mod:`core.metrics`). uvicorn's loggers go
through the root logger, so its lines share the processes' format (JSON or text).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from core.config import Settings
from core.logging import configure_logging, logging_configured
from core.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

if TYPE_CHECKING:
    from fastapi import FastAPI

QUIET_SIGTERM_ENV = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"  # Ray's C++ crash handler, off


def workers_for(settings: Settings, workers: int | None = None) -> int:
    return workers or settings.api_workers or os.cpu_count() or 1


def run_api(settings: Settings, host: str, port: int, workers: int | None = None) -> None:
    """Serve until SIGINT / SIGTERM (uvicorn then shuts every worker's lifespan down)."""
    import uvicorn

    n = workers_for(settings, workers)
    ranker = None
    if n > 1 and settings.api_feed and settings.ranker_backend == "ray" \
            and not settings.ray_address:
        import ray

        from serving.ranking.ray_serve import RayRanker

        ranker = RayRanker(settings)
        os.environ["REELRANK_RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        # The workers join this Ray and are stopped by SIGTERM as a matter of course (uvicorn's
        # supervisor, on Ctrl-C): Ray's crash handler printed a stack dump for it in each,
        # which reads as a crash. Set before they start: they inherit it.
        os.environ[QUIET_SIGTERM_ENV] = "1"
    if n > 1:
        prepare_multiprocess_dir(settings.var_dir / "prometheus-api")
    try:
        uvicorn.run("serving.launch:worker_app", factory=True, host=host, port=port, workers=n,
                    limit_concurrency=settings.api_max_concurrency, log_level="warning",
                    log_config=None, **proxy_options(settings))
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        if ranker is not None:
            os.environ.pop("REELRANK_RAY_ADDRESS", None)
            os.environ.pop(QUIET_SIGTERM_ENV, None)
            ranker.shutdown()


def worker_app() -> FastAPI:
    """The app of one uvicorn worker process: a spawned process starts without the CLI's
    logging, so it is set up here (level INFO, the settings' format) before the app."""
    from core.config import get_settings
    from serving.app import create_app

    settings = get_settings()
    if not logging_configured():
        configure_logging("INFO", settings.log_format_resolved)
    return create_app(settings, feed_services=settings.api_feed)


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn's X-Forwarded-For handling: only from ``settings.api_trusted_proxies``, and
    off when none are set (uvicorn's default trusts 127.0.0.1, so anything on the host could
    choose the client IP the per-IP rate limit counts)."""
    trusted = settings.api_trusted_proxies.strip()
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}
