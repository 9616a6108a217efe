"""Notifications: the ``notifications`` worker turns likes, comments, replies, follows and new
uploads of followed creators into stored, aggregated rows; readers page and mark them read.

Aggregation: a batch of events is first summed per (recipient, group) in memory, then written
as one multi-row ``INSERT ... ON CONFLICT (user_id, group_key) WHERE read_at IS NULL DO
UPDATE`` per ``notifications_batch`` rows, adding to ``actor_count`` atomically. A viral video's
million likes therefore cost one row (and one row write per batch of events), not a million
rows; "u1 and 41 others liked your video" is rendered at read time. Nobody is notified of
their own action or of an action across a block. The worker framework applies each event
exactly once (its id is recorded in the same transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import Settings
from core.events import Action, Event, UserInteraction, VideoModerated, VideoProcessed
from platform_services.notification_models import MAX_ACTORS, Notification
from platform_services.storage.db import upsert_insert
from platform_services.storage.models import (
    Block,
    Follow,
    Moderation,
    User,
    Video,
    VideoStatus,
    Visibility,
)
from platform_services.storage.social_models import Comment

TOPICS = ("user.interaction", "video.processed", "video.moderated")
GROUP = "notifications"
KINDS = ("like", "comment", "reply", "follow", "upload")


@dataclass
class Pending:
    """One recipient's group within a batch: what the upsert adds."""

    user_id: int
    kind: str
    group_key: str
    video_id: int | None = None
    comment_id: int | None = None
    actors: list[int] = field(default_factory=list)  # newest first
    count: int = 0
    at: datetime = field(default_factory=utcnow)

    def add(self, actor: int, at: datetime) -> None:
        self.actors = [actor, *[a for a in self.actors if a != actor]][:MAX_ACTORS]
        self.count += 1
        self.at = max(self.at, at)


class Batch:
    def __init__(self) -> None:
        self.groups: dict[tuple[int, str], Pending] = {}

    def add(self, recipient: int, actor: int, kind: str, key: str, at: datetime,
            video_id: int | None = None, comment_id: int | None = None) -> None:
        if recipient == actor:
            return
        p = self.groups.get((recipient, key))
        if p is None:
            p = self.groups[(recipient, key)] = Pending(recipient, kind, key, video_id,
                                                        comment_id, at=at)
        p.add(actor, at)


def _visible_upload(session: Session, video_id: int) -> Video | None:
    video = session.get(Video, video_id)
    if (video is None or video.status != VideoStatus.READY
            or video.moderation != Moderation.APPROVED
            or video.visibility not in (Visibility.PUBLIC, Visibility.FOLLOWERS)):
        return None
    return video


Raw = tuple[int, int, str, str, datetime, int | None, int | None]  # recipient, actor, kind, ...


def collect(session: Session,
            events: list[Event]) -> tuple[list[Raw], list[tuple[Video, datetime]]]:
    """One raw notification per (event, recipient), and the uploads whose followers get
    notified."""
    raw: list[Raw] = []
    uploads = []
    comments = {c.id: c for c in session.scalars(select(Comment).where(Comment.id.in_(
        {e.comment_id for e in events if isinstance(e, UserInteraction) and e.comment_id})))}
    parents = {c.id: c for c in session.scalars(select(Comment).where(Comment.id.in_(
        {c.parent_id for c in comments.values() if c.parent_id})))}
    for e in events:
        at = e.occurred_at
        if isinstance(e, VideoProcessed | VideoModerated):
            ready = (e.status == "ready" if isinstance(e, VideoProcessed)
                     else e.moderation == Moderation.APPROVED.value)
            if ready and (video := _visible_upload(session, e.video_id)) is not None:
                uploads.append((video, at))
            continue
        if not isinstance(e, UserInteraction) or e.author_id is None:
            continue
        if e.action == Action.LIKE and e.video_id is not None:
            raw.append((e.author_id, e.user_id, "like", f"like:video:{e.video_id}", at,
                        e.video_id, None))
        elif e.action == Action.FOLLOW:
            raw.append((e.author_id, e.user_id, "follow", "follow", at, None, None))
        elif e.action == Action.COMMENT and e.video_id is not None:
            raw.append((e.author_id, e.user_id, "comment", f"comment:video:{e.video_id}", at,
                        e.video_id, e.comment_id))
            comment = comments.get(e.comment_id or 0)
            parent = parents.get(comment.parent_id or 0) if comment else None
            if parent is not None:
                raw.append((parent.author_id, e.user_id, "reply",
                            f"reply:comment:{parent.id}", at, e.video_id, comment.id))
    return raw, uploads


def _blocked_pairs(session: Session, pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of (recipient, actor) pairs, those with a block between them either way."""
    if not pairs:
        return set()
    users = {u for p in pairs for u in p}
    rows = session.execute(select(Block.blocker_id, Block.blocked_id).where(
        Block.blocker_id.in_(users), Block.blocked_id.in_(users))).all()
    blocks = {(a, b) for a, b in rows} | {(b, a) for a, b in rows}
    return pairs & blocks


def write(session: Session, groups: Iterable[Pending], chunk: int) -> int:
    """Upsert the groups, ``chunk`` rows per statement; returns rows written."""
    rows = [{"user_id": p.user_id, "kind": p.kind, "group_key": p.group_key,
             "video_id": p.video_id, "comment_id": p.comment_id, "actor_ids": p.actors,
             "actor_count": p.count, "created_at": p.at, "updated_at": p.at, "read_at": None}
            for p in sorted(groups, key=lambda p: (p.user_id, p.group_key))]
    for i in range(0, len(rows), chunk):
        stmt = upsert_insert(session, Notification)
        n = Notification.__table__.c
        session.execute(stmt.on_conflict_do_update(
            index_elements=["user_id", "group_key"], index_where=text("read_at IS NULL"),
            set_={"actor_count": n.actor_count + stmt.excluded.actor_count,
                  "actor_ids": stmt.excluded.actor_ids, "video_id": stmt.excluded.video_id,
                  "comment_id": stmt.excluded.comment_id,
                  "updated_at": stmt.excluded.updated_at}), rows[i:i + chunk])
    return len(rows)


def _merge_actors(session: Session, batch: Batch) -> None:
    """Keep the newest actors of rows already unread (display only; counts add in SQL)."""
    keys = list(batch.groups)
    for i in range(0, len(keys), 500):
        part = keys[i:i + 500]
        rows = session.execute(select(Notification.user_id, Notification.group_key,
                                      Notification.actor_ids).where(
            Notification.read_at.is_(None),
            or_(*[and_(Notification.user_id == u, Notification.group_key == g)
                  for u, g in part])))
        for u, g, actors in rows:
            p = batch.groups[(u, g)]
            p.actors = list(dict.fromkeys([*p.actors, *(actors or [])]))[:MAX_ACTORS]


def apply(session: Session, events: list[Event], chunk: int = 1000) -> int:
    """The worker's handler: rows written (upserted) for this batch of events."""
    raw, uploads = collect(session, events)
    blocked = _blocked_pairs(session, {(r[0], r[1]) for r in raw})
    batch = Batch()
    for recipient, actor, kind, key, at, video_id, comment_id in raw:
        if (recipient, actor) not in blocked:
            batch.add(recipient, actor, kind, key, at, video_id, comment_id)
    _merge_actors(session, batch)
    written = write(session, batch.groups.values(), chunk)
    for video, at in uploads:
        written += notify_followers(session, video, at, chunk)
    return written


def notify_followers(session: Session, video: Video, at: datetime, chunk: int) -> int:
    """A followed creator posted: one aggregated ``upload`` row per follower, ``chunk``
    followers per statement (keyset over the follow index), none across a block."""
    last, written = 0, 0
    blockers = set(session.scalars(select(Block.blocker_id).where(
        Block.blocked_id == video.owner_id))) | set(session.scalars(
        select(Block.blocked_id).where(Block.blocker_id == video.owner_id)))
    while True:
        fans = list(session.scalars(select(Follow.follower_id).where(
            Follow.followee_id == video.owner_id, Follow.follower_id > last)
            .order_by(Follow.follower_id).limit(chunk)))
        if not fans:
            return written
        batch = Batch()
        for f in fans:
            if f not in blockers:
                batch.add(f, video.owner_id, "upload", "upload", at, video.id)
        _merge_actors(session, batch)
        written += write(session, batch.groups.values(), chunk)
        last = fans[-1]


# --- reading ---------------------------------------------------------------------------------


def unread_count(session: Session, user_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None))) or 0)


def page(session: Session, user_id: int, size: int, before: tuple[datetime, int] | None,
         unread_only: bool) -> tuple[list[Notification], bool]:
    """Newest first by (updated_at, id), keyset-paged."""
    q = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        q = q.where(Notification.read_at.is_(None))
    if before is not None:
        q = q.where(or_(Notification.updated_at < before[0],
                        and_(Notification.updated_at == before[0], Notification.id < before[1])))
    rows = list(session.scalars(q.order_by(Notification.updated_at.desc(),
                                           Notification.id.desc()).limit(size + 1)))
    return rows[:size], len(rows) > size


def usernames(session: Session, rows: Iterable[Notification]) -> dict[int, str]:
    ids = {a for r in rows for a in (r.actor_ids or [])}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


_VERBS = {"like": "liked your video", "comment": "commented on your video",
          "reply": "replied to your comment", "follow": "started following you",
          "upload": "posted a new video"}


def message(row: Notification, names: dict[int, str]) -> str:
    """"u1 and 41 others liked your video"."""
    first = names.get(row.actor_ids[0], "someone") if row.actor_ids else "someone"
    others = row.actor_count - 1
    who = first if others <= 0 else f"{first} and {others} other{'s' if others > 1 else ''}"
    verb = _VERBS[row.kind]
    if row.kind == "upload" and others > 0:
        verb = "posted new videos"
    return f"{who} {verb}"


def mark_read(session: Session, user_id: int, ids: list[int] | None) -> int:
    """Mark the user's own notifications read (``ids`` None: all); returns how many."""
    q = update(Notification).where(Notification.user_id == user_id,
                                   Notification.read_at.is_(None))
    if ids is not None:
        q = q.where(Notification.id.in_(ids))
    return session.execute(q.values(read_at=utcnow())).rowcount or 0


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """``reelrank worker notifications``."""
    from platform_services.bus.worker import Worker, WorkerConfig
    from platform_services.runtime import Runtime

    rt = Runtime.from_settings(settings)
    chunk = settings.notifications_batch
    worker = Worker(GROUP, TOPICS, lambda s, events: apply(s, events, chunk), rt.bus,
                    rt.sessions, WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms))
    try:
        await worker.run(stop)
    finally:
        await rt.close()
