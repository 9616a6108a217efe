"""The FastAPI application: ``create_app(settings)``; ``/api/v1/...`` plus health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.config import Settings, get_settings
from platform_services.runtime import Runtime
from serving.errors import install_error_handlers
from serving.routes import auth, events

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime.from_settings(settings)
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(title="reelrank", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    for router in (auth.router, events.router):
        app.include_router(router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
