"""The framework floor of ``reelrank bench serve``: what answering *any* signed-in page costs
on this stack, the baseline a cached feed page is compared with in the same run.

uvicorn (the API's loop and parser) and FastAPI with one route at the feed's path: the API's
own token check (``decode_token`` with the API's settings) and a fixed body, a real page the
API served earlier in the run (``REELRANK_BENCH_FLOOR_PAGE``, a JSON file). No middleware, no
rate limit, no Redis, no database, no feed: whatever the API spends above this is the
platform's own work per page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Response

from benchmarks.loadgen import PATH
from core.config import get_settings
from platform_services.auth import AuthError, decode_token

PAGE_ENV = "REELRANK_BENCH_FLOOR_PAGE"


def create_floor_app() -> FastAPI:
    settings = get_settings()
    body = Path(os.environ[PAGE_ENV]).read_bytes()
    app = FastAPI()

    @app.get(PATH)
    async def page(authorization: Annotated[str, Header()]) -> Response:
        try:
            decode_token(settings, authorization.removeprefix("Bearer "))
        except AuthError:
            raise HTTPException(401) from None
        return Response(body, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
