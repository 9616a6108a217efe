"""The FastAPI application: ``create_app(settings)``; ``/api/v1/...`` plus health, metrics and,
for the local blob store, ``/blobs/...`` (what its pre-signed media URLs point at)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app

from core.config import Settings, get_settings
from core.heap import freeze_startup_heap
from core.logging import configure_logging, logging_configured
from core.metrics import process_exited, process_registry
from core.tracing import provider_for
from platform_services.media.delivery import PlaylistSigner
from platform_services.ratelimit import RateLimiter
from platform_services.runtime import Runtime
from platform_services.storage.blob_routes import blob_router
from platform_services.storage.blobs import LocalBlobStore, open_blob_store
from serving.errors import error_responses, install_error_handlers
from serving.limits import BodySizeLimit, UnroutedRateLimit, rate_limited
from serving.observability import PROCESSES_READY, RequestObservability
from serving.routes import auth, events, experiments, feed
from serving.routes import comments as comment_routes
from serving.routes import lists as list_routes
from serving.routes import media as media_routes
from serving.routes import moderation as moderation_routes
from serving.routes import notifications as notification_routes
from serving.routes import search as search_routes
from serving.routes import social as social_routes
from serving.routes import users as user_routes
from serving.routes import videos as video_routes

API_PREFIX = "/api/v1"
WEB_DIR = Path(__file__).parent / "web"  # the web player (serving/web/README.md)


def create_app(settings: Settings | None = None, feed_services: bool = True) -> FastAPI:
    """The API. ``feed_services=False`` skips the feed's models, catalog and ranker (the feed
    routes then answer 503): for processes and tests that only need the platform routes."""
    settings = settings or get_settings()
    if logging_configured():  # the process's format follows these settings
        configure_logging(None, settings.log_format_resolved)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes and ``as_user`` units run on anyio's worker threads, each holding one
        # pooled connection: no more threads than pooled connections, or a burst past the pool
        # opens overflow connections that are closed again on return (a PostgreSQL backend
        # forked and torn down per request, just when the API is busiest).
        anyio.to_thread.current_default_thread_limiter().total_tokens = \
            settings.database_pool_size
        app.state.runtime = Runtime.from_settings(settings)
        app.state.rate_limiter = await asyncio.to_thread(RateLimiter, settings.redis_url)
        app.state.feeds = None
        services = None
        try:
            if feed_services:
                from serving.feed.pipeline import Feeds
                from serving.feed.services import FeedServices

                services = await asyncio.to_thread(
                    FeedServices.start, settings, app.state.runtime.sessions)
                app.state.feeds = Feeds(services)
            freeze_startup_heap()
            PROCESSES_READY.set(1)
            yield
        finally:
            PROCESSES_READY.set(0)
            if services is not None:
                await services.close()
            search_routes.close_engine(app)
            await app.state.runtime.close()
            if traces is not None:  # flushes the spans still queued
                await asyncio.to_thread(traces.shutdown)
            process_exited()

    # Every route is rate limited (per IP, and per user when signed in) and bodies are capped.
    app = FastAPI(title="reelrank", version="0.1.0", lifespan=lifespan,
                  dependencies=[Depends(rate_limited)])
    app.add_middleware(UnroutedRateLimit,
                       prefixes=("/web", "/metrics", "/docs", "/redoc", "/openapi.json"))
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes,
                       exempt=("/blobs/",))  # the blob route caps uploads at upload_max_bytes
    # Outermost: request id, latency by route, the access line and the trace's server span
    # cover every response.
    traces = provider_for(settings.otel_traces, settings.otel_service_name)
    app.add_middleware(RequestObservability, access=settings.log_access,
                       tracer=traces.get_tracer("reelrank.api") if traces else None)
    install_error_handlers(app)

    # First in the route table: a path is matched against the included routers one by one,
    # and a probe behind all of them spent a quarter of its CPU there (api_overhead.md).
    @app.get("/healthz", tags=["health"], responses=error_responses(429))
    async def healthz() -> dict[str, str]:  # async: no worker-thread hop for a probe
        return {"status": "ok"}

    # The busiest first (the feed, the app's telemetry): same reason as /healthz above.
    for router in (feed.router, events.router, auth.router, user_routes.router,
                   social_routes.router, comment_routes.router, list_routes.router,
                   experiments.router, video_routes.router, media_routes.router,
                   moderation_routes.router, search_routes.router, notification_routes.router):
        app.include_router(router, prefix=API_PREFIX, responses=error_responses(413, 429))
    blobs = open_blob_store(settings)
    app.state.blobs, app.state.playlists = blobs, PlaylistSigner.from_settings(settings)
    if isinstance(blobs, LocalBlobStore):  # S3 serves its own pre-signed URLs
        app.include_router(blob_router(blobs, max_upload_bytes=settings.upload_max_bytes,
                                       put_responses=error_responses(400, 403, 413, 507),
                                       get_responses=error_responses(400, 403, 404)),
                           responses=error_responses(429))
    app.mount("/metrics", make_asgi_app(process_registry()))  # all API processes' samples
    # The web player: static files, no auth to load; its data calls carry the JWT.
    app.mount("/web", StaticFiles(directory=WEB_DIR, html=True), name="web")

    return app
