"""``reelrank bench api-overhead``: where an API request's event-loop CPU goes.

The API runs in this process on the embedded backends (no sockets, no load generator): each
request is driven through the app's ASGI callable one after another on its own event loop,
and the loop thread's CPU time (``time.thread_time``) per request is measured. That is the part
of a request that cannot move to a worker thread, so it caps what one API process serves per
second whatever the rest costs. Two requests: ``GET /healthz`` (the least any request costs)
and a cached next page of ``GET /api/v1/feed/for-you`` whose feed is a fixed page (the feed's
own work, the cached list's read and write, is left out; ``serve.md`` has the whole page).
Each is measured on the app as it is and with one layer taken out at a time, then with all of
them out:

- the rate limiter's Redis round trip (the token is still decoded for its key);
- the API's own middleware (request id and access line, body cap, unrouted rate limit);
- the route's place in the route table (moved first; FastAPI matches a path against the
  included routers in order).

Ratios are against the app as it is, in the same run; the median of ``rounds`` rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from contextlib import nullcontext, redirect_stderr
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.report import table, write_report
from benchmarks.servers import embedded_env

FEED = "/api/v1/feed/for-you"
OWN_MIDDLEWARE = ("RequestObservability", "BodySizeLimit", "UnroutedRateLimit")
LAYERS = {"rate-limit round trip": "without the rate limiter's round trip",  # layer: its row
          "own middleware": "without the API's own middleware",
          "route order": "with the route first in the table"}


def _page(n: int = 20) -> dict[str, Any]:
    """A page in the feed's shape (``serving.feed.schemas.FeedPage``): ``n`` items."""
    base = "http://127.0.0.1:8000/api/v1/media/{v}/1796584651/7ac5a568fd7137c2/{f}"
    videos = [{
        "video_id": v, "user": {"user_id": v % 97, "username": f"u{v % 97}",
                                "display_name": f"u{v % 97}", "profile_image_url": None,
                                "verified": False},
        "title": "lyrics concert quick vocals #cover #music",
        "video_urls": {"hls": base.format(v=v, f="master.m3u8"),
                       "360p": base.format(v=v, f="360p.m3u8")},
        "thumbnail_url": base.format(v=v, f="thumb.jpg"), "duration": 31.5,
        "stats": {"views": 38, "likes": 6, "comments": 1, "shares": 2},
        "created_at": "2026-12-02T04:41:51.704000Z", "source": "ann", "position": 20 + i,
        "model_version": "reelrank-ranker/1", "request_id": "5ff85a4208ac482eb6a45709a38eead2",
    } for i, v in enumerate(range(1000, 1000 + n))]
    return {"videos": videos, "next_cursor": "x" * 120, "has_more": True}


class FixedFeed:
    """The feed with its pipeline replaced by one page: what the route itself costs."""

    inflight, saturated = 0, False

    def __init__(self) -> None:
        from serving.feed.pipeline import Page

        self.page = Page(_page(), {"server-timing": "cache;dur=0.2, page;dur=0.6"})

    async def for_you_page(self, *_: object) -> Any:
        return self.page


async def _call(app: Any, path: str, query: bytes, token: str) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": query,
             "headers": [(b"host", b"api"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _first(app: Any, path: str) -> None:
    """Move the route serving ``path`` (or its included router) to the front of the table."""
    routes = app.router.routes
    for i, route in enumerate(routes):
        inner = getattr(route, "original_router", None)
        paths = [getattr(r, "path", "") for r in inner.routes] if inner else [route.path]
        prefix = getattr(getattr(route, "include_context", None), "prefix", "")
        if any(prefix + p == path for p in paths):
            routes.insert(0, routes.pop(i))
            return
    raise LookupError(path)


async def _measure(app: Any, settings: Any, n: int, rounds: int) -> dict[str, float]:
    """Median loop-thread CPU microseconds per request of each request kind."""
    from platform_services.auth import issue_token

    token = issue_token(settings, 1, ttl_s=3600)
    requests = {"GET /healthz": ("/healthz", b""),
                "GET /api/v1/feed/for-you (cached page, fixed feed)": (FEED, b"cursor=next")}
    out = {}
    async with app.router.lifespan_context(app):
        app.state.feeds = FixedFeed()
        for name, (path, query) in requests.items():
            for _ in range(n // 5):  # warm-up
                assert await _call(app, path, query, token) == 200, name
            per_round = []
            for _ in range(rounds):
                started = time.thread_time()
                for _ in range(n):
                    await _call(app, path, query, token)
                per_round.append(1e6 * (time.thread_time() - started) / n)
            out[name] = statistics.median(per_round)
    return out


async def _variant(layers: tuple[str, ...], n: int, rounds: int) -> dict[str, float]:
    """The measurements on a fresh app with ``layers`` taken out."""
    from core.config import get_settings
    from serving.app import create_app

    settings = get_settings()
    app = create_app(settings, feed_services=False)
    if "own middleware" in layers:
        app.user_middleware = [m for m in app.user_middleware
                               if m.cls.__name__ not in OWN_MIDDLEWARE]
    if "route order" in layers:
        _first(app, "/healthz")
        _first(app, FEED)  # ahead of healthz: each request is measured on its own
    no_trip = mock.patch("serving.limits.check_all", _no_check)
    with no_trip if "rate-limit round trip" in layers else nullcontext():
        return await _measure(app, settings, n, rounds)


async def _no_check(*_: object) -> None:
    return None


async def _all(variants: dict[str, tuple[str, ...]], n: int, rounds: int
               ) -> dict[str, dict[str, float]]:
    """Every variant on one event loop (the limiter's async Redis pool is bound to its loop)."""
    from prometheus_client import REGISTRY

    def failed_open() -> float:  # platform_services.ratelimit.FAILED_OPEN (none: not loaded)
        return REGISTRY.get_sample_value("reelrank_rate_limit_unavailable_total") or 0.0

    skipped = failed_open()
    out = {name: await _variant(layers, n, rounds) for name, layers in variants.items()}
    if failed_open() != skipped:
        raise RuntimeError("the rate limiter failed open during the runs: Redis unreachable")
    return out


def run_bench(n: int, rounds: int, out: Path) -> Path:
    from core.config import get_settings
    from platform_services.storage.cache import stop_embedded_servers
    from platform_services.storage.db import migrate

    variants = {"as it is": ()} | {row: (layer,) for layer, row in LAYERS.items()} \
        | {"all three": tuple(LAYERS)}
    with tempfile.TemporaryDirectory(prefix="api-overhead-") as root, \
            mock.patch.dict(os.environ, embedded_env(Path(root))), \
            open(Path(root) / "api.log", "w") as log, redirect_stderr(log):  # access lines
        get_settings.cache_clear()
        try:
            migrate(get_settings().database_url)
            results = asyncio.run(_all(variants, n, rounds))
        finally:
            get_settings.cache_clear()
            stop_embedded_servers(under=Path(root))  # its Redis, before its files go
    rows = []
    for request, full in results["as it is"].items():
        rows += [[request, name, round(got[request]), f"{got[request] / full:.2f}x"]
                 for name, got in results.items()]
    body = (
        "The API in this process on the embedded backends, each request driven through its "
        "ASGI callable one after another; the event-loop thread's CPU time per request "
        "(`time.thread_time`): the part that cannot move to a worker thread. The for-you page's "
        "feed is a fixed page of 20 items (its own work left out: `serve.md`). "
        "Layers taken out one at a time, then all three: the rate limiter's Redis round trip "
        "(the token is still decoded for its key), the API's own middleware (request id and "
        "access line, body cap, unrouted rate limit), and the route's place in the route table "
        "(moved first). "
        f"{n} requests per round, median of {rounds} rounds, after {n // 5} warm-up requests; "
        "rate limits out of reach (every request still makes the limiter's round trip); the "
        "embedded Redis on a Unix socket.\n\n"
        + table(["request", "app", "loop CPU µs / request", "/ as it is"], rows))
    return write_report(out.stem, "API overhead: event-loop CPU per request, by layer", body,
                        out.parent)
