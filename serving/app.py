"""The FastAPI application: ``create_app(settings)``; ``/api/v1/...`` plus health, metrics and,
for the local blob store, ``/blobs/...`` (what its pre-signed media URLs point at)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import make_asgi_app

from core.config import Settings, get_settings
from platform_services.runtime import Runtime
from platform_services.storage.blob_routes import blob_router
from platform_services.storage.blobs import LocalBlobStore, open_blob_store
from serving.errors import install_error_handlers
from serving.routes import auth, events, experiments, feed

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, feed_services: bool = True) -> FastAPI:
    """The API. ``feed_services=False`` skips the feed's models, catalog and ranker (the feed
    routes then answer 503): for processes and tests that only need the platform routes."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime.from_settings(settings)
        app.state.feeds = None
        services = None
        try:
            if feed_services:
                from serving.feed.pipeline import Feeds
                from serving.feed.services import FeedServices

                services = await asyncio.to_thread(
                    FeedServices.start, settings, app.state.runtime.sessions)
                app.state.feeds = Feeds(services)
            yield
        finally:
            if services is not None:
                await services.close()
            await app.state.runtime.close()

    app = FastAPI(title="reelrank", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for router in (auth.router, events.router, feed.router, experiments.router):
        app.include_router(router, prefix=API_PREFIX)
    blobs = open_blob_store(settings)
    if isinstance(blobs, LocalBlobStore):  # S3 serves its own pre-signed URLs
        app.include_router(blob_router(blobs))
    app.mount("/metrics", make_asgi_app())

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
