"""Redis state of the feed: each ranked list behind its cursor, and what each user has seen.

A first page ranks a few hundred candidates but shows twenty; the rest of the list is kept for
``feed_cache_ttl_s`` under a random id, so the next pages are a Redis read instead of a
re-rank, and pages of one list can never repeat a video. The seen set is a sorted set by
exposure time, capped at ``feed_seen_max``, that later first pages filter against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import redis

SEEN_TTL_S = 30 * 86_400


def _list_key(list_id: str) -> str:
    return f"feed:list:{list_id}"


def _seen_key(user_id: int) -> str:
    return f"feed:seen:{user_id}"


@dataclass(frozen=True)
class RankedList:
    """A user's ranked, re-ranked candidates and how they were made."""

    user_id: int
    ids: np.ndarray  # int64, in feed order
    sources: np.ndarray  # uint8 source codes (candidate_gen.sources.CODE)
    model_version: str
    variant: str | None = None
    experiment: str | None = None
    degraded: tuple[str, ...] = field(default_factory=tuple)
    arms: tuple[tuple[str, str], ...] = ()  # (experiment, variant) the list was made for


def save(r: redis.Redis, list_id: str, ranked: RankedList, ttl_s: int) -> None:
    meta = {"u": ranked.user_id, "m": ranked.model_version, "v": ranked.variant,
            "e": ranked.experiment, "d": list(ranked.degraded), "a": list(ranked.arms)}
    key = _list_key(list_id)
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={"meta": json.dumps(meta),
                            "ids": np.asarray(ranked.ids, "<i8").tobytes(),
                            "src": np.asarray(ranked.sources, np.uint8).tobytes()})
    pipe.expire(key, ttl_s)
    pipe.execute()


def load(r: redis.Redis, list_id: str) -> RankedList | None:
    got = r.hgetall(_list_key(list_id))
    if not got or b"meta" not in got:
        return None
    meta = json.loads(got[b"meta"])
    return RankedList(int(meta["u"]), np.frombuffer(got[b"ids"], "<i8"),
                      np.frombuffer(got[b"src"], np.uint8), meta["m"], meta["v"], meta["e"],
                      tuple(meta["d"]), tuple(map(tuple, meta.get("a", ()))))


def mark_seen(r: redis.Redis, user_id: int, ids: np.ndarray, now_ms: int, keep: int) -> None:
    if not len(ids) or keep <= 0:
        return
    key = _seen_key(user_id)
    pipe = r.pipeline(transaction=False)
    pipe.zadd(key, {int(v): now_ms for v in ids})
    pipe.zremrangebyrank(key, 0, -keep - 1)
    pipe.expire(key, SEEN_TTL_S)
    pipe.execute()


def seen_count(r: redis.Redis, user_id: int) -> int:
    return int(r.zcard(_seen_key(user_id)))


def seen_mask(r: redis.Redis, user_id: int, ids: np.ndarray) -> np.ndarray:
    """True where the user has been shown the video before."""
    if not len(ids):
        return np.zeros(0, bool)
    scores = r.zmscore(_seen_key(user_id), [int(v) for v in ids])
    return np.fromiter((s is not None for s in scores), bool, len(ids))
