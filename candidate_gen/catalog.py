"""The video catalog as arrays indexed by video id: what every feed request filters and shows.

A feed request looks at hundreds of candidates; asking the database about each would cost more
than ranking them. :class:`Catalog` holds an immutable :class:`Snapshot` (owner, status,
visibility, topic, upload time, counters, titles, creators' names) and replaces it with a new
one when :meth:`Catalog.refresh` finds videos changed since the last look (by the indexed
``updated_at``); every ``stats_every_s`` it reads the counters changed since its last read
(``video_stats.updated_at``, stamped by the counters worker: re-reading all of them cost ~0.3 s
of CPU per process per refresh on a 100k catalog). Readers take ``catalog.snapshot``
once per request and see one consistent version. A video becomes eligible (or stops being)
within one refresh period of its row changing, i.e. of ``video.processed`` / ``video.deleted``.
The media pipeline's rendition ladder (``video_media.renditions``, written with the ready
status) is kept as :data:`LADDER` / :data:`QUALITIES` bits; creators' profiles (display name,
avatar, badge) are re-read with the counters, so an edit shows within ``stats_every_s``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from platform_services.media.delivery import QUALITIES
from platform_services.media.models import VideoMedia
from platform_services.storage.models import (
    Moderation,
    User,
    Video,
    VideoStats,
    VideoStatus,
    Visibility,
)

# ``Snapshot.renditions`` bits: a stored HLS ladder, then each design quality it has (a rung
# below them all, from a source under 360p, is named in ``Snapshot.small_rungs``).
LADDER = 1  # quality i of QUALITIES: bit 1 << (i + 1)

VISIBILITY = (Visibility.PUBLIC.value, Visibility.FOLLOWERS.value, Visibility.PRIVATE.value)
PUBLIC, FOLLOWERS, PRIVATE = range(3)
# Smoothed engagement rate: (likes + 2 shares + prior) / (views + strength).
_PRIOR_RATE, _PRIOR_STRENGTH = 0.05, 20.0
EXPLORE_TOP_SHARE = 0.2  # the exploration pool: the best fifth by engagement rate
NEWEST = 5_000  # the fresh source's pool: the newest ready public videos
_OVERLAP = timedelta(seconds=5)  # rows re-read before a watermark (see Catalog.refresh)


@dataclass(frozen=True)
class Creator:
    """What a feed item shows of a video's creator."""

    username: str
    display_name: str
    profile_image_url: str | None = None
    verified: bool = False


def _rendition_bits(renditions: list[dict] | None) -> tuple[int, str | None]:
    """A ladder (``video_media.renditions``: dicts with ``name``) as bits, and the name of a
    rung below the design's qualities if it has one."""
    if not renditions:
        return 0, None
    names = [r["name"] for r in renditions]
    bits = LADDER | sum(1 << (i + 1) for i, q in enumerate(QUALITIES) if q in names)
    small = next((n for n in names if n not in QUALITIES), None)
    return bits, small


@dataclass(frozen=True)
class Snapshot:
    """Per-video arrays, position = video id (``owner < 0``: no such video)."""

    owner: np.ndarray  # int64
    ready: np.ndarray  # bool: status ready and moderation approved
    visibility: np.ndarray  # uint8: PUBLIC | FOLLOWERS | PRIVATE
    topic: np.ndarray  # int16 index into ``topics``, -1 unknown
    created_ms: np.ndarray  # int64
    duration_ms: np.ndarray  # int64, -1 unknown
    views: np.ndarray  # int64
    likes: np.ndarray
    shares: np.ndarray
    titles: list[str | None]
    topics: list[str]
    creators: dict[int, Creator]
    comments: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    renditions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # see LADDER
    small_rungs: dict[int, str] = field(default_factory=dict)  # video id: rung under 360p
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    by_owner: dict[int, np.ndarray] = field(default_factory=dict)  # ready ids, newest first
    explore_pool: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    newest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ready, public

    @property
    def capacity(self) -> int:
        return len(self.owner)

    def known(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ids that are videos of this snapshot (out-of-range ids are not)."""
        ids = np.asarray(ids, np.int64)
        inside = (ids >= 0) & (ids < self.capacity)
        out = np.zeros(len(ids), bool)
        out[inside] = self.owner[ids[inside]] >= 0
        return out

    def fresh(self, since_ms: int, limit: int) -> np.ndarray:
        """Ready public videos uploaded since ``since_ms``, newest first."""
        newest = self.newest[:limit]
        return newest[self.created_ms[newest] >= since_ms]


def _derive(s: Snapshot) -> Snapshot:
    """Quality, the per-creator lists and the exploration pool from the base arrays."""
    quality = ((s.likes + 2 * s.shares + _PRIOR_RATE * _PRIOR_STRENGTH)
               / (s.views + _PRIOR_STRENGTH)).astype(np.float32)
    ready = np.flatnonzero(s.ready & (s.owner >= 0))
    order = ready[np.lexsort((-s.created_ms[ready], s.owner[ready]))]
    owners, starts = np.unique(s.owner[order], return_index=True)
    by_owner = dict(zip(owners.tolist(), np.split(order, starts[1:]), strict=False)) \
        if len(order) else {}
    public = ready[s.visibility[ready] == PUBLIC]
    pool = np.zeros(0, np.int64)
    if len(public):
        cut = np.quantile(quality[public], 1 - EXPLORE_TOP_SHARE)
        pool = public[quality[public] >= cut]
    newest = public[np.argsort(-s.created_ms[public], kind="stable")][:NEWEST]
    return replace(s, quality=quality, by_owner=by_owner, explore_pool=pool, newest=newest)


def _grow(a: np.ndarray, n: int, fill: object) -> np.ndarray:
    if len(a) >= n:
        return a.copy()
    out = np.full(max(n, int(len(a) * 1.25) + 16), fill, a.dtype)
    out[: len(a)] = a
    return out


def _ms(ts: datetime | None) -> int:
    return int(ts.timestamp() * 1000) if ts is not None else 0


class Catalog:
    """The current :class:`Snapshot`, refreshed from the database by :meth:`refresh`."""

    def __init__(self, sessions: sessionmaker[Session], stats_every_s: float = 30.0) -> None:
        self.sessions = sessions
        self.stats_every_s = stats_every_s
        self.snapshot = _derive(Snapshot(
            owner=np.full(0, -1, np.int64), ready=np.zeros(0, bool),
            visibility=np.zeros(0, np.uint8), topic=np.zeros(0, np.int16),
            created_ms=np.zeros(0, np.int64), duration_ms=np.zeros(0, np.int64),
            views=np.zeros(0, np.int64), likes=np.zeros(0, np.int64),
            shares=np.zeros(0, np.int64), titles=[], topics=[], creators={}))
        self._watermark: datetime | None = None
        self._recent: dict[int, datetime] = {}  # rows of the last read, by id: updated_at
        self._stats_watermark: datetime | None = None
        self._stats_at = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Apply videos changed since the last call (all of them the first time) and, every
        ``stats_every_s``, the counters. Returns how many videos changed."""
        with self._lock, self.sessions() as session:
            since = self._watermark
            q = select(Video.id, Video.owner_id, Video.status, Video.visibility, Video.category,
                       Video.created_at, Video.duration_ms, Video.title, Video.updated_at,
                       Video.moderation, VideoMedia.renditions) \
                .outerjoin(VideoMedia, VideoMedia.video_id == Video.id)
            if since is not None:
                # Rows committed late with an earlier updated_at are caught by the overlap.
                q = q.where(Video.updated_at >= since - _OVERLAP)
            fetched = session.execute(q).all()
            # The overlap re-reads recent rows; only versions not applied yet count.
            rows = [r for r in fetched if self._recent.get(r.id) != r.updated_at]
            self._recent = {r.id: r.updated_at for r in fetched}
            stats_due = time.monotonic() - self._stats_at >= self.stats_every_s
            if not rows and not stats_due:
                return 0
            snap = self._apply(session, self.snapshot, rows)
            counted = 0  # counter rows applied
            if stats_due:
                snap, self._stats_watermark, counted = _apply_stats(session, snap,
                                                                    self._stats_watermark)
                self._stats_at = time.monotonic()
            if rows:
                self._watermark = max(r.updated_at for r in rows)
            # Only new rows or counters move what is derived (~30 ms on 100k videos).
            self.snapshot = _derive(snap) if rows or counted else snap
            return len(rows)

    @staticmethod
    def _apply(session: Session, s: Snapshot, rows: list) -> Snapshot:
        if not rows:
            return s
        n = max(r.id for r in rows) + 1
        owner, ready = _grow(s.owner, n, -1), _grow(s.ready, n, False)
        vis, topic = _grow(s.visibility, n, PRIVATE), _grow(s.topic, n, -1)
        created, dur = _grow(s.created_ms, n, 0), _grow(s.duration_ms, n, -1)
        views, likes, shares = (_grow(a, n, 0) for a in (s.views, s.likes, s.shares))
        comments, rend = _grow(s.comments, n, 0), _grow(s.renditions, n, 0)
        titles = s.titles + [None] * (len(owner) - len(s.titles))
        small_rungs = dict(s.small_rungs)
        topics, codes = list(s.topics), {t: i for i, t in enumerate(s.topics)}
        for r in rows:
            owner[r.id] = r.owner_id
            # Moderation holds (needs_review) and blocks keep a video out of every feed.
            ready[r.id] = r.status == VideoStatus.READY and r.moderation == Moderation.APPROVED
            vis[r.id] = VISIBILITY.index(Visibility(r.visibility).value)
            if r.category is not None and r.category not in codes:
                codes[r.category] = len(topics)
                topics.append(r.category)
            topic[r.id] = codes.get(r.category, -1)
            created[r.id], dur[r.id] = _ms(r.created_at), r.duration_ms or -1
            titles[r.id] = r.title
            rend[r.id], small = _rendition_bits(r.renditions)
            small_rungs.pop(r.id, None)
            if small is not None:
                small_rungs[r.id] = small
        creators = dict(s.creators)
        missing = {r.owner_id for r in rows} - creators.keys()
        if missing:
            creators |= _creators(session, missing)
        return replace(s, owner=owner, ready=ready, visibility=vis, topic=topic,
                       created_ms=created, duration_ms=dur, views=views, likes=likes,
                       shares=shares, comments=comments, renditions=rend,
                       small_rungs=small_rungs, titles=titles, topics=topics, creators=creators)


def _apply_stats(session: Session, s: Snapshot, since: datetime | None
                 ) -> tuple[Snapshot, datetime | None, int]:
    """``s`` with the counters changed since ``since`` (all of them when None) and its
    creators' profiles read again; the watermark for the next read (when this read started)
    and how many counter rows were applied.
    Rows stamped up to ``_OVERLAP`` before it are read again, so a batch stamped before the
    read and committed after it is still found (applying a row twice changes nothing)."""
    q = select(VideoStats.video_id, VideoStats.views, VideoStats.likes, VideoStats.shares,
               VideoStats.comments, VideoStats.updated_at)
    if since is not None:
        q = q.where(VideoStats.updated_at >= since - _OVERLAP)
    since = utcnow()
    rows = session.execute(q).all()
    counters: dict[str, np.ndarray] = {}
    applied = 0
    if rows:
        # Plain tuples: numpy probes each Row for array protocols, and a Row answers a
        # missing attribute by raising inside SQLAlchemy (~1 s per 100k rows).
        a = np.array([tuple(r)[:5] for r in rows], np.int64)
        inside = (a[:, 0] >= 0) & (a[:, 0] < s.capacity)
        # A row of a video this snapshot does not have yet is read again next time.
        late = [r.updated_at for r, ok in zip(rows, inside.tolist(), strict=True) if not ok]
        since = min([since, *late])
        a = a[inside]
        applied = len(a)
        for j, name in enumerate(("views", "likes", "shares", "comments"), start=1):
            column = _grow(getattr(s, name), s.capacity, 0)
            column[a[:, 0]] = a[:, j]
            counters[name] = column
    creators = _creators(session, set(s.creators)) if s.creators else {}
    return replace(s, creators=creators, **counters), since, applied


_IN_CHUNK = 5_000  # ids per ``IN (...)``: under every backend's bound-parameter limit


def _creators(session: Session, ids: set[int]) -> dict[int, Creator]:
    """Profiles of the creators ``ids`` (the display name falls back to the username)."""
    ordered, out = sorted(ids), {}
    for i in range(0, len(ordered), _IN_CHUNK):
        rows = session.execute(select(User.id, User.username, User.display_name,
                                      User.avatar_url, User.verified)
                               .where(User.id.in_(ordered[i:i + _IN_CHUNK])))
        out |= {r.id: Creator(r.username, r.display_name or r.username, r.avatar_url,
                              bool(r.verified)) for r in rows}
    return out
