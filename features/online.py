"""The online read path: one call for a user and a candidate list, defaults, a time budget.

Serving calls::

    reader = FeatureReader(settings)                  # once per process
    feats = reader.get(user_id, video_ids)
    feats.user    # {"u_tenure_days": ..., "ctx_hour": ..., "u_seen": [...], ...}
    feats.items   # DataFrame, one row per video_id in order, schema.ITEM_COLUMNS

Pass ``creator_ids`` (aligned with ``video_ids``) when the candidate source knows them; it saves
the round trip that looks them up. Entities the store does not know (a new user, a video
uploaded a minute ago) get the declared defaults, rates the global rate of the last batch
build; if the store does not answer within ``feature_read_timeout_ms`` the call returns all
defaults with ``timed_out=True`` instead of holding the request. Ids must be ints and
``columns`` known names, else :class:`FeatureStoreError`.

Two backends give the same values (a test holds them to it): ``feast`` (``get_online_features``,
any online store) and ``redis`` (pipelined ``HMGET`` of Feast's own Redis layout: entity-key
hash, murmur3 field names, ``ValueProto`` values), which skips Feast's per-call planning and
protobuf response building; ``auto`` picks ``redis`` on a Redis online store.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from prometheus_client import Counter, Histogram

from core.config import Settings
from core.logging import kv
from core.metrics import cache_lookups
from features import schema
from features.batch import prior_defaults
from features.repo import PRIOR, PROJECT, VIEW_BY_NAME
from features.store import (
    FeatureStoreError,
    online_kind,
    online_url,
    open_store,
    read_meta,
    repo_dir,
)
from features.windows import minute_of, window_sums
from platform_services.storage.cache import redis_client

log = logging.getLogger(__name__)

READ_SECONDS = Histogram(
    "reelrank_feature_read_seconds",
    "Online feature reads (1 user + candidates)",
    ["backend"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
READ_FALLBACKS = Counter(
    "reelrank_feature_read_fallbacks", "Reads answered with defaults", ["reason"]
)

Raw = dict[str, list[Any]]  # "view:field" -> values per entity, None where the store has none
Backend = Literal["auto", "feast", "redis"]


@dataclass(frozen=True)
class OnlineFeatures:
    """A user's features (scalars and lists) and one row of item features per candidate."""

    user: dict[str, Any]
    items: pd.DataFrame
    user_found: bool
    videos_found: int
    timed_out: bool = False


def check_id(name: str, value: Any) -> int:
    """An entity id as a Python int, or a :class:`FeatureStoreError` naming the bad one."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise FeatureStoreError(
            f"{name}: entity ids are int64, got {type(value).__name__} {value!r}"
        )
    return int(value)


def check_refs(refs: Sequence[str]) -> None:
    """Raise :class:`FeatureStoreError` for a ``view:field`` that the repo does not declare."""
    for ref in refs:
        view_name, _, name = ref.partition(":")
        view = VIEW_BY_NAME.get(view_name)
        if view is None:
            raise FeatureStoreError(
                f"unknown feature view {view_name!r} in {ref!r} (known: {', '.join(VIEW_BY_NAME)})"
            )
        if name not in {f.name for f in view.fields}:
            known = ", ".join(f.name for f in view.fields)
            raise FeatureStoreError(f"unknown feature {ref!r} (fields of {view_name}: {known})")


# --- backends: raw values per entity ---------------------------------------------------------

Request = tuple[list[str], dict[str, list[int]]]  # refs, join key -> ids (one per entity row)


class OnlineBackend(Protocol):
    """Raw values out of the online store: what both read paths promise the reader."""

    name: str

    def read(self, requests: list[Request]) -> list[Raw]:
        """One ``Raw`` per request: each ref's values per entity row, ``None`` where missing."""
        ...


class FeastBackend:
    """``FeatureStore.get_online_features``: the reference path, works on every online store."""

    name = "feast"

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings)

    def read(self, requests: list[Request]) -> list[Raw]:
        out: list[Raw] = []
        for refs, rows in requests:
            if not any(len(ids) for ids in rows.values()):  # Feast refuses a request of no rows
                out.append({ref: [] for ref in refs})
                continue
            resp = self.store.get_online_features(refs, rows, full_feature_names=True).to_dict()
            out.append({ref: resp[ref.replace(":", "__")] for ref in refs})
        return out


def _key_prefix(join_keys: Sequence[str]) -> bytes:
    """The entity-key bytes before the values (Feast's serialization version 3)."""
    out = [struct.pack("<I", len(join_keys))]
    for k in sorted(join_keys):
        out += [struct.pack("<II", 2, len(k)), k.encode()]  # 2: ValueType.STRING
    return b"".join(out)


_MISS = object()


class RedisBackend:
    """Feast's Redis layout read directly: every request of a call in one pipelined batch.

    Single-node Redis (``redis_type: redis``, what :func:`features.store.repo_config_dict`
    configures); a Redis Cluster deployment would read through :class:`FeastBackend`.
    """

    name = "redis"

    def __init__(self, settings: Settings, timeout_s: float | None = None) -> None:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.protos.feast.types.Value_pb2 import Value

        # The platform's one Redis factory: the same URL handling and socket timeouts as every
        # other connection (a Redis that stops answering costs a read its budget, no more).
        timeout_s = timeout_s or max(settings.feature_read_timeout_ms / 1000.0, 0.25)
        self.client = redis_client(
            online_url(settings), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._parse = Value.FromString
        self._field = {
            f"{v.name}:{f.name}": _mmh3(f"{v.name}:{f.name}")
            for v in VIEW_BY_NAME.values()
            for f in v.fields
        }
        self._decoded: dict[bytes | None, Any] = {None: None}

    def _decode_one(self, raw: bytes) -> Any:
        """A ``ValueProto`` as a Python value (lists as tuples); scalars are memoised by
        their bytes (counts, ids and rates repeat across entities; lists and buckets don't)."""
        value = self._parse(raw)
        kind = value.WhichOneof("val")
        out = None if kind is None else getattr(value, kind)
        if kind is None or kind == "bytes_val":
            return out
        if kind.endswith("_list_val"):
            return tuple(out.val)
        if len(self._decoded) > 200_000:
            self._decoded = {None: None}
        self._decoded[raw] = out
        return out

    def _decode(self, raws: list[bytes | None]) -> list[Any]:
        get = self._decoded.get
        out = [get(b, _MISS) for b in raws]
        for i, v in enumerate(out):
            if v is _MISS:
                out[i] = self._decode_one(raws[i])  # type: ignore[arg-type]
        return out

    def read(self, requests: list[Request]) -> list[Raw]:
        """All requests in one pipelined write of raw ``HMGET`` commands and one read of the
        replies (hiredis): ~1 µs of Python per entity instead of redis-py's ~10 µs per
        pipelined command object."""
        return self.read_with(requests)[0]

    def read_with(
        self, requests: list[Request], extra: Sequence[Sequence[Any]] = ()
    ) -> tuple[list[Raw], list[Any]]:
        """:meth:`read`, plus the ``extra`` commands (``("ZRANGE", key, 0, -1)``, ...) in the
        same round trip; their replies come second, in order. For a caller whose own keys
        live on this Redis (the feed's seen set): one round trip where there would be two."""
        commands: list[bytes] = []
        plan: list[tuple[int, list[str], list[int] | None, int]] = []
        for req, (refs, rows) in enumerate(requests):
            by_join_keys: dict[tuple[str, ...], list[str]] = {}
            for ref in refs:
                join_keys = tuple(VIEW_BY_NAME[ref.split(":")[0]].join_keys)
                by_join_keys.setdefault(join_keys, []).append(ref)
            for join_keys, group in by_join_keys.items():
                keys = redis_keys(join_keys, rows)
                unique = list(dict.fromkeys(keys))
                where = None
                if len(unique) < len(keys):  # repeated entities are read once
                    index = {k: i for i, k in enumerate(unique)}
                    where = [index[k] for k in keys]
                fields = [self._field[r] for r in group]
                head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
                tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
                commands += [b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail) for k in unique]
                plan.append((req, group, where, len(unique)))
        n_features = len(commands)
        commands += [_resp(*cmd) for cmd in extra]
        replies = self._pipeline(commands)
        extra_replies, replies = replies[n_features:], replies[:n_features]
        results: list[Raw] = [{} for _ in requests]
        pos = 0
        for req, group, where, n in plan:
            rows_got = replies[pos : pos + n]
            pos += n
            for j, ref in enumerate(group):
                values = self._decode([row[j] for row in rows_got])
                results[req][ref] = values if where is None else [values[i] for i in where]
        return results, extra_replies

    def _pipeline(self, commands: list[bytes]) -> list[Any]:
        if not commands:
            return []
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)])
            return _read_replies(conn, len(commands))
        except BaseException:
            conn.disconnect()  # a half-read reply stream must not go back to the pool
            raise
        finally:
            pool.release(conn)


def _read_replies(conn: Any, n: int) -> list[Any]:
    """``n`` replies off ``conn``. With hiredis, straight from its reader: redis-py's
    ``read_response`` costs a few µs of Python per reply, and a for-you read has ~800."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or not hasattr(parser, "read_from_socket"):
        return [conn.read_response() for _ in range(n)]
    from redis._parsers import hiredis

    pending = getattr(hiredis, "NOT_ENOUGH_DATA", False)  # the reader's "need more bytes"
    out: list[Any] = []
    gets, fill = reader.gets, parser.read_from_socket
    while len(out) < n:
        reply = gets()
        if reply is pending:
            fill()
            continue
        if isinstance(reply, Exception):
            raise reply
        out.append(reply)
    return out


def _resp(*args: Any) -> bytes:
    """One command in the Redis protocol (RESP2)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def redis_keys(join_keys: Sequence[str], rows: dict[str, list[int]]) -> list[bytes]:
    """Feast's Redis key of each int64 entity row: its serialized key (version 3, join keys
    sorted), then the project name; built with ``struct``, without protos."""
    prefix, project = _key_prefix(join_keys), PROJECT.encode()
    columns = [rows[k] for k in sorted(join_keys)]
    if len(columns) == 1:
        return [prefix + struct.pack("<IIq", 4, 8, v) + project for v in columns[0]]
    # Several join keys (user x creator): every row's values packed at once by numpy, then
    # sliced (a third of the per-row ``struct`` + ``join`` cost, ~0.5 ms a for-you page).
    n = len(columns[0])
    packed = np.empty((n, len(columns)), _ENTITY_VALUE)
    packed["kind"], packed["size"] = 4, 8
    for j, col in enumerate(columns):
        packed["value"][:, j] = col
    raw, width = packed.tobytes(), _ENTITY_VALUE.itemsize * len(columns)
    return [prefix + raw[i : i + width] + project for i in range(0, n * width, width)]


# One serialized int64 entity value: its type tag (4: int64), its size, the value.
_ENTITY_VALUE = np.dtype([("kind", "<u4"), ("size", "<u4"), ("value", "<i8")])


def open_backend(
    settings: Settings, backend: Backend = "auto", timeout_s: float | None = None
) -> OnlineBackend:
    """The raw reader for ``settings``' online store (``auto``: direct on Redis, else Feast);
    ``timeout_s``: the Redis socket timeout (default: the read budget, at least 250 ms)."""
    kind = online_kind(settings)
    if backend == "auto":
        backend = "redis" if kind == "redis" else "feast"
    if backend == "redis" and kind != "redis":
        raise FeatureStoreError("backend 'redis' needs the Redis online store")
    return RedisBackend(settings, timeout_s) if backend == "redis" else FeastBackend(settings)


# --- the reader ------------------------------------------------------------------------------

ITEM_REFS = (
    schema.VIDEO_BATCH_REFS + schema.VIDEO_LIVE_REFS + schema.CREATOR_REFS + schema.PAIR_REFS
)


class NearCache:
    """Batch-view values per entity, kept in-process for ``ttl_s``: they change only when a
    snapshot is materialized, so most of a read's fields need not cross the network. Entities
    the store did not have are cached too (a new video gets batch values only with the next
    build; until then its upload event's values come live from ``video_fresh``)."""

    def __init__(self, ttl_s: float, max_entries: int = 500_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._values: dict[tuple[str, int], tuple[float, tuple[Any, ...]]] = {}
        self._lock = threading.Lock()

    def split(self, view: str, ids: Sequence[int]) -> tuple[dict[int, tuple], list[int]]:
        """Cached values by id, and the distinct ids to fetch."""
        now = time.monotonic()
        hits: dict[int, tuple] = {}
        get = self._values.get
        for i in ids:
            entry = get((view, i))
            if entry is not None and entry[0] > now:
                hits[i] = entry[1]
        missed = [i for i in dict.fromkeys(ids) if i not in hits]
        cache_lookups(f"feature_near_cache:{view}", len(hits), len(missed))
        return hits, missed

    def put(self, view: str, ids: list[int], columns: list[list[Any]]) -> None:
        if self.ttl_s <= 0 or not ids:
            return
        expires = time.monotonic() + self.ttl_s
        with self._lock:
            if len(self._values) + len(ids) > self.max_entries:
                self._values.clear()
            for i, values in zip(ids, zip(*columns, strict=True), strict=True):
                self._values[(view, i)] = (expires, values)


def _through_cache(
    cache: NearCache, view: str, refs: list[str], ids: list[int], hits: dict, fetched: Raw | None
) -> Raw:
    """``refs`` for every id in ``ids``: cached rows merged with the freshly fetched ones."""
    if fetched is not None:
        missed = list(dict.fromkeys(i for i in ids if i not in hits))
        columns = [fetched[r] for r in refs]
        cache.put(view, missed, columns)
        hits = hits | dict(zip(missed, zip(*columns, strict=True), strict=True))
    rows = [hits[i] for i in ids]
    return {ref: [row[j] for row in rows] for j, ref in enumerate(refs)}


_OBJECT_KINDS = ("ints", "floats", "strs", "bytes")  # kept as Python lists, not arrays


def _defaults(meta: dict[str, Any]) -> dict[str, Any]:
    """Per ``view:field``: the value a missing entity gets (rates: last build's global rate)."""
    priors = prior_defaults(meta)
    return {
        f"{v.name}:{f.name}": priors[f"{v.name}:{f.name}"] if f.default is PRIOR else f.default
        for v in VIEW_BY_NAME.values()
        for f in v.fields
    }


def _first_known(*values: Any, default: int = -1) -> int:
    return next((v for v in values if v is not None), default)


class FeatureReader:
    """Online features for serving; thread-safe, one per process. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend = "auto",
        timeout_ms: int | None = None,
        socket_timeout_s: float | None = None,
    ) -> None:
        self.backend = open_backend(settings, backend, socket_timeout_s)
        self.timeout_s = (timeout_ms or settings.feature_read_timeout_ms) / 1000.0
        self._settings = settings
        self._meta_path = repo_dir(settings) / "meta.json"
        self._meta_mtime: float | None = None
        self._refresh_meta()
        self._is_list = {
            f"{v.name}:{f.name}": f.kind in _OBJECT_KINDS
            for v in VIEW_BY_NAME.values()
            for f in v.fields
        }
        self.cache = NearCache(settings.feature_cache_ttl_s)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feature-read")

    def _refresh_meta(self) -> None:
        """Reload the defaults when a batch build rewrote ``meta.json``."""
        mtime = self._meta_path.stat().st_mtime if self._meta_path.exists() else 0.0
        if mtime != self._meta_mtime:
            self.meta = read_meta(self._settings)
            self.defaults = _defaults(self.meta)
            self._meta_mtime = mtime

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def get(
        self,
        user_id: int,
        video_ids: Sequence[int],
        *,
        creator_ids: Sequence[int] | None = None,
        now: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> OnlineFeatures:
        """Features of ``user_id`` and of each video for it, as of ``now`` (default: now)."""
        user = check_id("user_id", user_id)
        videos = [check_id(f"video_ids[{i}]", v) for i, v in enumerate(video_ids)]
        creators = None
        if creator_ids is not None:
            if len(creator_ids) != len(videos):
                raise FeatureStoreError("creator_ids must align with video_ids")
            creators = [check_id(f"creator_ids[{i}]", c) for i, c in enumerate(creator_ids)]
        wanted = self._check_columns(columns)
        at = now or datetime.now(UTC)
        started = time.perf_counter()
        future = self._pool.submit(self._read, user, videos, creators)
        try:
            user_raw, item_raw = future.result(timeout=self.timeout_s)
            timed_out = False
        except FutureTimeout:
            future.cancel()
            READ_FALLBACKS.labels("timeout").inc()
            log.warning("feature read timed out", extra=kv(user_id=user, videos=len(videos)))
            user_raw, item_raw, timed_out = {}, {}, True
        READ_SECONDS.labels(self.backend.name).observe(time.perf_counter() - started)
        feats = self._assemble(user_raw, item_raw, videos, at, timed_out)
        if wanted is not None:
            user_part = {c: v for c, v in feats.user.items() if c in wanted}
            items = feats.items[[c for c in schema.ITEM_COLUMNS if c in wanted]]
            feats = OnlineFeatures(
                user_part, items, feats.user_found, feats.videos_found, feats.timed_out
            )
        return feats

    @staticmethod
    def _check_columns(columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        known = set(schema.USER_COLUMNS) | set(schema.ITEM_COLUMNS) | set(schema.USER_LISTS)
        for c in columns:
            if c not in known:
                raise FeatureStoreError(
                    f"unknown feature {c!r} (known: {', '.join(sorted(known))})"
                )
        return list(columns)

    def _read(self, user: int, videos: list[int], creators: list[int] | None) -> tuple[Raw, Raw]:
        """Raw values: the user's (one row) and the candidates' (one row per video).

        One round trip when the creators are given, two otherwise (the videos' creators key
        the creator and user x creator views); batch views go through the near-cache.
        """
        self._refresh_meta()
        user_req: Request = (schema.USER_REFS, {"user_id": [user]})
        if not videos:
            return self.backend.read([user_req])[0], {}
        cache = self.cache
        v_hits, v_miss = cache.split("video_stats", videos)
        first: list[Request] = [user_req, (schema.VIDEO_LIVE_REFS, {"video_id": videos})]
        if v_miss:
            first.append((schema.VIDEO_BATCH_REFS, {"video_id": v_miss}))

        def merge_videos(got: list[Raw]) -> tuple[Raw, Raw, Raw]:
            batch = got[2] if v_miss else None
            refs = schema.VIDEO_BATCH_REFS
            return got[0], got[1], _through_cache(cache, "video_stats", refs, videos, v_hits, batch)

        if creators is None:  # a first round trip finds the creators
            user_raw, live_raw, video_raw = merge_videos(self.backend.read(first))
            creators = [
                _first_known(s, f)
                for s, f in zip(
                    video_raw["video_stats:creator_id"],
                    live_raw["video_fresh:creator_id"],
                    strict=True,
                )
            ]
            first = []
        c_hits, c_miss = cache.split("creator_stats", creators)
        second: list[Request] = [
            (schema.PAIR_REFS, {"user_id": [user] * len(videos), "creator_id": creators})
        ]
        if c_miss:
            second.append((schema.CREATOR_REFS, {"creator_id": c_miss}))
        got = self.backend.read(first + second)
        if first:
            user_raw, live_raw, video_raw = merge_videos(got)
            got = got[len(first) :]
        creator_raw = _through_cache(
            cache,
            "creator_stats",
            schema.CREATOR_REFS,
            creators,
            c_hits,
            got[1] if c_miss else None,
        )
        return user_raw, live_raw | video_raw | creator_raw | got[0]

    def _column(self, raw: Raw, ref: str, n: int) -> Any:
        """One ref's values for ``n`` rows with defaults filled: an array, or a list of lists."""
        values = raw.get(ref) or [None] * n
        default = self.defaults[ref]
        if self._is_list[ref]:
            return [default if v is None else v for v in values]
        return np.asarray([default if v is None else v for v in values])

    def _assemble(
        self, user_raw: Raw, item_raw: Raw, videos: list[int], at: datetime, timed_out: bool
    ) -> OnlineFeatures:
        n = len(videos)
        rows = max(n, 1)
        full: dict[str, Any] = {}
        for ref in schema.USER_REFS:  # one value, repeated for the per-row derivations
            col = self._column(user_raw, ref, 1)
            full[ref] = col * rows if isinstance(col, list) else np.repeat(col, rows)
        for ref in ITEM_REFS:
            full[ref] = self._column(item_raw, ref, rows)
        now_minute = minute_of(at.timestamp())
        heads = full["video_realtime:head_minute"]
        for kind in ("view", "like"):
            sums = window_sums(full[f"video_realtime:{kind}_buckets"], heads, now_minute)
            for w, values in sums.items():
                full[f"v_rt_{kind}s_{w}"] = values
        cols = schema.assemble(full, np.full(rows, int(at.timestamp() * 1000), dtype=np.int64))
        user = {c: cols[c][0].item() for c in schema.USER_COLUMNS}
        user |= {c: list(full[ref][0]) for c, ref in schema.USER_LISTS.items()}
        items = pd.DataFrame(
            {c: cols[c][:n] for c in schema.ITEM_COLUMNS}, index=pd.Index(videos, name="video_id")
        )
        user_found = any(v is not None for vs in user_raw.values() for v in vs)
        found = sum(
            s is not None or f is not None
            for s, f in zip(
                item_raw.get("video_stats:creator_id", []),
                item_raw.get("video_fresh:creator_id", []),
                strict=False,
            )
        )
        return OnlineFeatures(user, items, user_found, found, timed_out)
