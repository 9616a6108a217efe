"""The following feed's hybrid fan-out: push for small creators, pull for big ones.

When a video becomes visible (``video.processed`` ready and approved, public or followers-only)
and its creator has fewer than ``following_push_max_followers`` followers, the ``fanout``
worker adds it to every follower's Redis sorted set ``feed:{user_id}`` (member
``"{video_id}:{owner_id}"``, score = upload time in ms; capped at ``following_feed_len``, the
oldest dropped). Bigger creators' videos are not pushed: readers pull them from the database
(:func:`pull`). A follow back-fills the creator's recent videos; an unfollow or a block
removes them (readers also filter on the live follow set, so a page never shows them).

Crash safety: followers are walked in id order, ``following_fanout_batch`` at a time; each
batch's ``ZADD``s and the progress mark (``fanout:{video_id}`` = last follower done) go in one
``MULTI``. A worker killed mid-way leaves the event uncommitted on the bus; the redelivery
resumes after the last finished batch, and ``ZADD`` of the same member and score is a no-op,
so there is neither a duplicate nor a gap. ``feed:{user_id}:built`` marks a set that holds
everything the database would give: if Redis was flushed it is missing and :func:`read_pushed`
rebuilds the set from the database first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import and_, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from core.clock import DAY_MS, utcnow
from core.config import Settings
from core.events import Action, Event, UserInteraction, VideoModerated, VideoProcessed
from platform_services.social import blocked_either_way_ids
from platform_services.storage.models import Follow, Moderation, Video, VideoStatus, Visibility
from platform_services.storage.social_models import UserStats

TOPICS = ("video.processed", "video.moderated", "user.interaction")
GROUP = "fanout"
FEED_VISIBILITIES = (Visibility.PUBLIC, Visibility.FOLLOWERS)
PROGRESS_TTL_S = 2 * 24 * 3600


def feed_key(user_id: int) -> str:
    return f"feed:{user_id}"


def built_key(user_id: int) -> str:
    return f"feed:{user_id}:built"


def progress_key(video_id: int) -> str:
    return f"fanout:{video_id}"


def member(video_id: int, owner_id: int) -> str:
    return f"{video_id}:{owner_id}"


@dataclass(frozen=True)
class Item:
    """One entry of a following feed: newest first by ``(ts_ms, video_id)``."""

    ts_ms: int
    video_id: int
    owner_id: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.ts_ms, self.video_id)


@dataclass(frozen=True)
class FanoutConfig:
    threshold: int = 1000
    feed_len: int = 500
    batch: int = 200
    days: float = 30.0

    @classmethod
    def from_settings(cls, s: Settings) -> FanoutConfig:
        return cls(s.following_push_max_followers, s.following_feed_len,
                   s.following_fanout_batch, s.following_days)


def _ms(video: Video) -> int:
    return int(video.created_at.timestamp() * 1000)


def big_creators(session: Session, creator_ids: Iterable[int], threshold: int) -> set[int]:
    """Of ``creator_ids``, those with at least ``threshold`` followers (the counters worker's
    ``user_stats``): their videos are pulled, not pushed."""
    ids = [int(c) for c in creator_ids]
    out: set[int] = set()
    for i in range(0, len(ids), 5000):  # keep each IN list within every driver's limits
        out.update(session.scalars(select(UserStats.user_id).where(
            UserStats.user_id.in_(ids[i:i + 5000]), UserStats.followers >= threshold)))
    return out


@dataclass(frozen=True)
class ViewerGraph:
    """What a following-feed page needs of the viewer's graph."""

    followees: list[int]
    big: set[int]  # followees at or above the push threshold: pulled at read time
    blocked: set[int]  # users blocked either way


def viewer_graph(session: Session, user_id: int, threshold: int) -> ViewerGraph:
    """Everyone ``user_id`` follows with their follower counts, and the blocks either way, in
    one statement (one round trip per page instead of two; no parameter list however many
    creators the user follows)."""
    follows = (select(Follow.followee_id, func.coalesce(UserStats.followers, 0),
                      literal(False))
               .outerjoin(UserStats, UserStats.user_id == Follow.followee_id)
               .where(Follow.follower_id == user_id))
    blocked = select(blocked_either_way_ids(user_id).subquery().c[0], literal(0),
                     literal(True))
    followees, big, blocks = [], set(), set()
    for uid, followers, is_block in session.connection().execute(union_all(follows, blocked)):
        if is_block:
            blocks.add(int(uid))
        else:
            followees.append(int(uid))
            if followers >= threshold:
                big.add(int(uid))
    return ViewerGraph(followees, big, blocks)


def _feedable(video: Video | None) -> bool:
    return (video is not None and video.status == VideoStatus.READY
            and video.moderation == Moderation.APPROVED and video.visibility in FEED_VISIBILITIES)


# --- push ------------------------------------------------------------------------------------


def _push(pipe: redis.client.Pipeline, user_ids: Sequence[int], items: Sequence[Item],
          feed_len: int) -> None:
    mapping = {member(i.video_id, i.owner_id): i.ts_ms for i in items}
    for u in user_ids:
        pipe.zadd(feed_key(u), mapping)
        pipe.zremrangebyrank(feed_key(u), 0, -(feed_len + 1))  # keep the newest feed_len


def fan_out(session: Session, r: redis.Redis, video_id: int, cfg: FanoutConfig,
            after_batch: Callable[[int], None] | None = None) -> int:
    """Push one video to its creator's followers (if it is feedable and the creator small).
    Returns how many follower feeds this call wrote; resumes after a crash (module doc).
    ``after_batch(n_done)`` runs after each batch (tests kill the worker there)."""
    video = session.get(Video, video_id)
    if not _feedable(video) or video.owner_id in big_creators(session, [video.owner_id],
                                                             cfg.threshold):
        return 0
    item, progress = Item(_ms(video), video.id, video.owner_id), progress_key(video.id)
    mark = r.get(progress)
    if mark == b"done":
        return 0
    last, written = int(mark or 0), 0
    while True:
        followers = list(session.scalars(
            select(Follow.follower_id).where(Follow.followee_id == video.owner_id,
                                             Follow.follower_id > last)
            .order_by(Follow.follower_id).limit(cfg.batch)))
        if not followers:
            break
        pipe = r.pipeline(transaction=True)  # the batch and its progress mark, atomically
        _push(pipe, followers, [item], cfg.feed_len)
        pipe.set(progress, followers[-1], ex=PROGRESS_TTL_S)
        pipe.execute()
        last, written = followers[-1], written + len(followers)
        if after_batch is not None:
            after_batch(written)
    r.set(progress, "done", ex=PROGRESS_TTL_S)
    return written


def recent_videos(session: Session, owner_ids: Sequence[int], cfg: FanoutConfig,
                  before: tuple[int, int] | None = None, limit: int | None = None) -> list[Item]:
    """Feedable videos of ``owner_ids`` from the last ``cfg.days``, newest first, strictly
    older than ``before`` = (ts_ms, video_id): the pull path and the rebuild."""
    if not owner_ids:
        return []
    since = utcnow() - timedelta(milliseconds=int(cfg.days * DAY_MS))
    q = (select(Video.id, Video.owner_id, Video.created_at)
         .where(Video.owner_id.in_([int(o) for o in owner_ids]), Video.created_at >= since,
                Video.status == VideoStatus.READY, Video.moderation == Moderation.APPROVED,
                Video.visibility.in_(FEED_VISIBILITIES))
         .order_by(Video.created_at.desc(), Video.id.desc()).limit(limit or cfg.feed_len))
    if before is not None:
        ts = datetime.fromtimestamp(before[0] / 1000, UTC)
        q = q.where(or_(Video.created_at < ts, and_(Video.created_at == ts,
                                                    Video.id < before[1])))
    return [Item(int(c.timestamp() * 1000), int(v), int(o)) for v, o, c in session.execute(q)]


def pull(session: Session, owner_ids: Sequence[int], cfg: FanoutConfig,
         before: tuple[int, int] | None, limit: int) -> list[Item]:
    """Big creators' videos at read time (one indexed query over their uploads)."""
    return recent_videos(session, owner_ids, cfg, before, limit)


# --- follow changes --------------------------------------------------------------------------


def backfill(session: Session, r: redis.Redis, follower: int, creator: int,
             cfg: FanoutConfig) -> None:
    """A new follow of a small creator: their recent videos join the follower's feed now."""
    if creator in big_creators(session, [creator], cfg.threshold):
        return
    items = recent_videos(session, [creator], cfg)
    if items:
        pipe = r.pipeline(transaction=False)
        _push(pipe, [follower], items, cfg.feed_len)
        pipe.execute()


def remove_creator(r: redis.Redis, user_id: int, creator: int) -> int:
    """Drop ``creator``'s videos from ``user_id``'s pushed feed (unfollow, block)."""
    key, suffix = feed_key(user_id), f":{creator}"
    gone = [m for m in r.zrange(key, 0, -1) if m.decode().endswith(suffix)]
    return r.zrem(key, *gone) if gone else 0


# --- read ------------------------------------------------------------------------------------


def rebuild(session: Session, r: redis.Redis, user_id: int, small_followees: Sequence[int],
            cfg: FanoutConfig) -> int:
    """Refill ``feed:{user_id}`` from the database (after a flush) and mark it built."""
    items = recent_videos(session, small_followees, cfg)
    pipe = r.pipeline(transaction=True)
    if items:
        _push(pipe, [user_id], items, cfg.feed_len)
    pipe.set(built_key(user_id), 1)
    pipe.execute()
    return len(items)


def read_pushed(session: Session, r: redis.Redis, user_id: int,
                small_followees: Sequence[int], cfg: FanoutConfig,
                before: tuple[int, int] | None, limit: int) -> list[Item]:
    """Up to ``limit`` pushed items strictly older than ``before``, newest first (rebuilding
    the set from the database first if Redis lost it)."""
    if not r.exists(built_key(user_id)):
        rebuild(session, r, user_id, small_followees, cfg)
    top = "+inf" if before is None else before[0]
    # Ties on the cursor's timestamp come back too and are cut below; ask for room for them.
    raw = r.zrevrangebyscore(feed_key(user_id), top, "-inf", start=0, num=limit + 50,
                             withscores=True)
    out = []
    for m, score in raw:
        vid, _, owner = m.decode().partition(":")
        item = Item(int(score), int(vid), int(owner))
        if before is None or item.key < before:
            out.append(item)
    return out[:limit]


# --- the worker ------------------------------------------------------------------------------


def _became_visible(e: Event) -> bool:
    """A video that may now be shown: transcoded ready, or approved by a moderator (a held
    video's ``video.processed`` fans out nothing: it is not approved yet)."""
    return ((isinstance(e, VideoProcessed) and e.status == "ready")
            or (isinstance(e, VideoModerated) and e.moderation == Moderation.APPROVED.value))


def handle(session: Session, r: redis.Redis, events: list[Event], cfg: FanoutConfig) -> None:
    """Apply a batch of events to the pushed feeds (see the module doc)."""
    for e in events:
        if _became_visible(e):
            fan_out(session, r, e.video_id, cfg)  # type: ignore[attr-defined]
        elif isinstance(e, UserInteraction) and e.author_id is not None:
            if e.action == Action.FOLLOW:
                backfill(session, r, e.user_id, e.author_id, cfg)
            elif e.action == Action.UNFOLLOW:
                remove_creator(r, e.user_id, e.author_id)
            elif e.action == Action.BLOCK:
                remove_creator(r, e.user_id, e.author_id)
                remove_creator(r, e.author_id, e.user_id)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """``reelrank worker fanout``: keep followers' pushed feeds from the event stream."""
    from platform_services.bus.worker import Worker, WorkerConfig
    from platform_services.runtime import Runtime
    from platform_services.storage.cache import redis_client

    rt = Runtime.from_settings(settings)
    r, cfg = redis_client(settings.redis_url), FanoutConfig.from_settings(settings)
    worker = Worker(GROUP, TOPICS, lambda s, events: handle(s, r, events, cfg), rt.bus,
                    rt.sessions, WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms))
    try:
        await worker.run(stop)
    finally:
        r.close()
        await rt.close()
