"""Redis state of the feed: each ranked list behind its cursor, and what each user has seen.

A first page ranks a few hundred candidates but shows twenty; the rest of the list is kept for
``feed_cache_ttl_s`` under a random id, so the next pages are a Redis read instead of a
re-rank, and pages of one list can never repeat a video. The list keeps the viewer's follows
and blocks as they were when it was built, so a next page re-checks visibility without asking
the database again (a block takes effect from the viewer's next first page). The seen set is
a sorted set by exposure time, capped at ``feed_seen_max``, that later first pages filter
against; it is read whole, in the first page's one read round trip.
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
class Pending:
    """A list whose positions from ``done`` on are still in score order: the re-ranking
    rules choose them when a page gets near (``serving.feed.rerank.resume``), with the
    parameters the list was made with."""

    done: int
    quotas: dict[int, float]  # source code -> share
    explore_slots: float

    @classmethod
    def after(cls, done: int, total: int, quotas: dict[int, float], explore_slots: float
              ) -> Pending | None:
        """What is left of a list of ``total`` positions once ``done`` are chosen; None when
        nothing is."""
        return cls(done, quotas, explore_slots) if done < total else None


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
    followees: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    blocked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    arms: tuple[tuple[str, str], ...] = ()  # (experiment, variant) the list was made for
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # per id;
    # what the list was ordered by before re-ranking (empty for unscored lists): debug only
    pending: Pending | None = None  # None: every position is final


def _i8(a: np.ndarray) -> bytes:
    return np.asarray(a, "<i8").tobytes()


def write(r: redis.Redis, user_id: int, shown: np.ndarray, now_ms: int, keep: int,
          saved: tuple[str, RankedList, int] | None = None) -> None:
    """One round trip: mark ``shown`` seen (the newest ``keep`` remembered) and, for a first
    page, ``saved = (list_id, ranked, ttl_s)``: the rest of the list behind its cursor."""
    pipe = r.pipeline(transaction=False)
    if saved is not None:
        list_id, ranked, ttl_s = saved
        p = ranked.pending
        meta = {"u": ranked.user_id, "m": ranked.model_version, "v": ranked.variant,
                "e": ranked.experiment, "d": list(ranked.degraded), "a": list(ranked.arms),
                "p": None if p is None else [p.done, list(p.quotas.items()), p.explore_slots]}
        key = _list_key(list_id)
        pipe.hset(key, mapping={"meta": json.dumps(meta), "ids": _i8(ranked.ids),
                                "src": np.asarray(ranked.sources, np.uint8).tobytes(),
                                "fol": _i8(ranked.followees), "blk": _i8(ranked.blocked),
                                "sc": np.asarray(ranked.scores, "<f4").tobytes()})
        pipe.expire(key, ttl_s)
    if len(shown) and keep > 0:
        key = _seen_key(user_id)
        pipe.zadd(key, dict.fromkeys(np.asarray(shown).tolist(), now_ms))
        pipe.zremrangebyrank(key, 0, -keep - 1)
        pipe.expire(key, SEEN_TTL_S)
    if len(pipe):
        pipe.execute()


def load(r: redis.Redis, list_id: str) -> RankedList | None:
    got = r.hgetall(_list_key(list_id))
    if not got or b"meta" not in got:
        return None
    meta = json.loads(got[b"meta"])
    p = meta.get("p")
    return RankedList(int(meta["u"]), np.frombuffer(got[b"ids"], "<i8"),
                      np.frombuffer(got[b"src"], np.uint8), meta["m"], meta["v"], meta["e"],
                      tuple(meta["d"]), np.frombuffer(got.get(b"fol", b""), "<i8"),
                      np.frombuffer(got.get(b"blk", b""), "<i8"),
                      tuple(map(tuple, meta.get("a", ()))),
                      np.frombuffer(got.get(b"sc", b""), "<f4"),
                      None if p is None else Pending(
                          int(p[0]), {int(k): float(v) for k, v in p[1]}, float(p[2])))


def mark_seen(r: redis.Redis, user_id: int, ids: np.ndarray, now_ms: int, keep: int) -> None:
    write(r, user_id, ids, now_ms, keep)


def seen_command(user_id: int) -> tuple[str, str, int, int]:
    """The read of the whole seen set, to send in a caller's pipeline."""
    return ("ZRANGE", _seen_key(user_id), 0, -1)


def parse_seen(members: list[bytes]) -> np.ndarray:
    return np.asarray(list(map(int, members)), np.int64)


def read_seen(r: redis.Redis, user_id: int) -> np.ndarray:
    return parse_seen(r.execute_command(*seen_command(user_id)))
