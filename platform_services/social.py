"""The social graph and reactions: follow, like, save, share, block, report.

Every call works in the caller's transaction and emits its ``user.interaction`` through the
outbox, so the state change and its event commit together. Toggles (follow, like, save, block)
are rows keyed by (actor, target) written with ``INSERT ... ON CONFLICT DO NOTHING`` / ``DELETE``:
the row count says whether anything changed, and only a change emits an event. Repeating a
call is therefore a no-op, concurrent repeats race on the primary key (one wins), and the
``counters`` worker, which counts events exactly once, cannot drift from the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    and_,
    bindparam,
    delete,
    literal,
    literal_column,
    or_,
    select,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from core.events import Action, UserInteraction
from platform_services.bus.outbox import emit, emit_if_changed, outbox_values
from platform_services.errors import Forbidden, Invalid, NotFound
from platform_services.storage.models import (
    Block,
    Follow,
    User,
    Video,
    VideoStats,
    VideoStatus,
    Visibility,
)
from platform_services.storage.social_models import (
    Comment,
    Like,
    Report,
    ReportReason,
    ReportTarget,
    Save,
    Share,
)


@lru_cache(maxsize=64)
def _change(dialect: str, table: Table, columns: tuple[str, ...], on: bool) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` (``on``) or ``DELETE`` of the row keyed by
    ``columns``, ``RETURNING 1`` (psycopg reports -1 rows for an ``ON CONFLICT`` insert) and
    with bound values: built once (building it per like cost more CPU than SQLite spends
    running it). On PostgreSQL the event's outbox row is written by the same statement
    (:func:`~platform_services.bus.outbox.emit_if_changed`)."""
    if on:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        names = columns + tuple(_defaulted(table, columns))
        change = (insert(table).values({c: bindparam(c, type_=table.c[c].type) for c in names})
                  .on_conflict_do_nothing())
    else:
        change = delete(table).where(and_(*(table.c[c] == bindparam(c) for c in columns)))
    change = change.returning(literal_column("1"))
    return emit_if_changed(change) if dialect == "postgresql" else change


def _defaulted(table: Table, columns: tuple[str, ...]) -> dict[str, Any]:
    """The Python-side defaults (``created_at`` ...) of the columns not in ``columns``, as
    values: SQLAlchemy fills them in for a plain ``INSERT``, not for one inside a CTE."""
    return {c.name: c.default.arg(None) if c.default.is_callable else c.default.arg
            for c in table.c if c.default is not None and c.name not in columns}


def _toggle(session: Session, model: type, key: dict[str, int | str], on: bool, action: Action,
            actor_id: int, *, video_id: int | None = None, author_id: int | None = None) -> bool:
    """Add (``on``) or remove the ``model`` row keyed by ``key``; ``True`` if this call
    changed it, and only a change emits ``action``. The one way every idempotent toggle
    (follow, block, like, save and their undos) is written: on PostgreSQL one statement, the
    change and its event together (so :data:`ONE_WRITE` actions need no transaction there)."""
    conn = session.connection()  # Core statements: no ORM execution layer
    dialect, table, columns = conn.dialect.name, model.__table__, tuple(key)
    values = key | _defaulted(table, columns) if on else key
    event = UserInteraction(user_id=actor_id, action=action, video_id=video_id,
                            author_id=author_id)
    change = _change(dialect, table, columns, on)
    if dialect == "postgresql":  # the change writes the event's outbox row too
        return conn.execute(change, values | outbox_values(event)).first() is not None
    changed = conn.execute(change, values).first() is not None
    if changed:
        emit(session, event)
    return changed


# --- who may see what ------------------------------------------------------------------------


def blocked_either_way_ids(user_id: int | BindParameter[int]) -> Any:
    """The rule: a subquery of the users who blocked ``user_id`` or whom ``user_id`` blocked.
    Such a pair sees nothing of each other (videos, comments, feeds, search); the two
    helpers below run this subquery, so the rule is written once."""
    return union(select(Block.blocked_id).where(Block.blocker_id == user_id),
                 select(Block.blocker_id).where(Block.blocked_id == user_id))


def blocked_users_either_way(session: Session, user_id: int) -> set[int]:
    """:func:`blocked_either_way_ids` as a set (for filtering rows in Python)."""
    return set(session.scalars(blocked_either_way_ids(user_id)))


def blocked_either_way(session: Session, a: int, b: int) -> bool:
    """Whether a block stands between ``a`` and ``b`` (:func:`blocked_either_way_ids`)."""
    return bool(session.scalar(select(literal(b).in_(blocked_either_way_ids(a)))))


def follows(session: Session, follower: int, followee: int) -> bool:
    return session.get(Follow, (follower, followee)) is not None


def visible_videos(session: Session, viewer_id: int, video_ids: set[int]) -> dict[int, Video]:
    """Of ``video_ids``, the videos ``viewer_id`` may see (:func:`visible_to`), in 3 queries."""
    videos = list(session.scalars(select(Video).where(Video.id.in_(video_ids))))
    owners = {v.owner_id for v in videos} - {viewer_id}
    blocked = blocked_users_either_way(session, viewer_id) & owners if owners else set()
    followed = set(session.scalars(select(Follow.followee_id).where(
        Follow.follower_id == viewer_id, Follow.followee_id.in_(owners))))
    return {v.id: v for v in videos if v.owner_id == viewer_id or (
        v.status == VideoStatus.READY and v.owner_id not in blocked
        and (v.visibility == Visibility.PUBLIC
             or (v.visibility == Visibility.FOLLOWERS and v.owner_id in followed)))}


def visible_to(viewer_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """Who may see a video, as SQL over ``Video`` rows (the feed's rule, ``serving/feed/
    filters.py``): its owner always; others if it is ready, public or followers-only from a
    creator they follow, and no block stands between them either way."""
    followed = select(Follow.followee_id).where(Follow.follower_id == viewer_id)
    return or_(Video.owner_id == viewer_id, and_(
        Video.status == VideoStatus.READY,
        Video.owner_id.not_in(blocked_either_way_ids(viewer_id)),
        or_(Video.visibility == Visibility.PUBLIC,
            and_(Video.visibility == Visibility.FOLLOWERS, Video.owner_id.in_(followed))),
    ))  # fmt: skip


# Built once, bound per call (building ``visible_to`` and its cache key anew per request cost
# more CPU than the database spends on it): every video route checks visibility.
_VISIBLE_VIDEO = select(Video).where(Video.id == bindparam("video_id"),
                                     visible_to(bindparam("viewer_id")))


def visible_video(session: Session, viewer_id: int, video_id: int) -> Video:
    """The video if ``viewer_id`` may see it; :class:`NotFound` otherwise (whether it exists
    or not, so ids of private videos leak nothing). One query."""
    video = session.scalar(_VISIBLE_VIDEO, {"video_id": video_id, "viewer_id": viewer_id})
    if video is None:
        raise NotFound("no such video")
    return video


_VISIBLE_VIDEO_ID = select(Video.id).where(Video.id == bindparam("video_id"),
                                           visible_to(bindparam("viewer_id")))


def check_visible(session: Session, viewer_id: int, video_id: int) -> None:
    """:func:`visible_video`'s check without loading the video (a Core read of its id): the
    comment-thread read, whose first page is otherwise served from a cache, needs no more."""
    if session.connection().scalar(
            _VISIBLE_VIDEO_ID, {"video_id": video_id, "viewer_id": viewer_id}) is None:
        raise NotFound("no such video")


def existing_user(session: Session, user_id: int) -> User:
    """The user, unless there is none or the account was deleted (:class:`NotFound`)."""
    user = session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("no such user")
    return user


# --- follow, block ---------------------------------------------------------------------------


# Whether the followee's account is live, and whether a block stands between the two: one
# Core statement built once (a follow's two ORM reads cost more CPU than its write).
_FOLLOW_TARGET = select(
    User.id,
    bindparam("follower_id", type_=BigInteger).in_(
        blocked_either_way_ids(bindparam("followee_id", type_=BigInteger))),
).where(User.id == bindparam("followee_id", type_=BigInteger), User.deleted_at.is_(None))


def follow(session: Session, follower_id: int, followee_id: int) -> bool:
    """Follow (idempotent); ``True`` if this call started it."""
    if follower_id == followee_id:
        raise Invalid("cannot follow yourself", field="user_id")
    target = session.connection().execute(
        _FOLLOW_TARGET, {"follower_id": follower_id, "followee_id": followee_id}).first()
    if target is None:  # as existing_user
        raise NotFound("no such user")
    if target[1]:  # as blocked_either_way
        raise Forbidden("a block is in place between you and this user")
    return _toggle(session, Follow, {"follower_id": follower_id, "followee_id": followee_id}, True,
                   Action.FOLLOW, follower_id, author_id=followee_id)


def unfollow(session: Session, follower_id: int, followee_id: int) -> bool:
    """Unfollow (idempotent); ``True`` if this call ended a follow."""
    return _toggle(session, Follow, {"follower_id": follower_id, "followee_id": followee_id}, False,
                   Action.UNFOLLOW, follower_id, author_id=followee_id)


def block(session: Session, blocker_id: int, blocked_id: int) -> bool:
    """Block (idempotent): ends follows both ways; the blocked creator disappears from the
    blocker's feeds and comment threads, and neither can see the other's videos."""
    if blocker_id == blocked_id:
        raise Invalid("cannot block yourself", field="user_id")
    existing_user(session, blocked_id)
    # The follows end first, so consumers see the unfollows before the block; with a block
    # already in place there are none (it forbids them), so a repeat emits nothing.
    unfollow(session, blocker_id, blocked_id)
    unfollow(session, blocked_id, blocker_id)
    return _toggle(session, Block, {"blocker_id": blocker_id, "blocked_id": blocked_id}, True,
                   Action.BLOCK, blocker_id, author_id=blocked_id)


def unblock(session: Session, blocker_id: int, blocked_id: int) -> bool:
    return _toggle(session, Block, {"blocker_id": blocker_id, "blocked_id": blocked_id}, False,
                   Action.UNBLOCK, blocker_id, author_id=blocked_id)


_BLOCKED_BY = select(Block.blocked_id).where(Block.blocker_id == bindparam("blocker_id"))


def blocked_ids(session: Session, blocker_id: int) -> list[int]:
    """Whom ``blocker_id`` blocked (one way: whose comments they no longer see)."""
    return list(session.connection().scalars(_BLOCKED_BY, {"blocker_id": blocker_id}))


# --- reactions on videos ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reaction:
    active: bool  # liked / saved after the call
    changed: bool  # whether this call changed it
    total: int  # the video's count, with this call's change in it


# Built once, bound per call: a like is the hottest write, and building this statement (and
# its cache key) anew cost more CPU than PostgreSQL spends running it (``benchmarks/social.py``).
_LIKE_TARGET = (
    select(Video.owner_id, VideoStats.likes)
    .outerjoin(VideoStats, VideoStats.video_id == Video.id)
    .where(Video.id == bindparam("video_id"), visible_to(bindparam("viewer_id")))
)


def _like_target(session: Session, viewer_id: int, video_id: int) -> tuple[int, int]:
    """The video's owner and counted likes if ``viewer_id`` may see it (as
    :func:`visible_video`), in one query; :class:`NotFound` otherwise."""
    row = session.connection().execute(
        _LIKE_TARGET, {"video_id": video_id, "viewer_id": viewer_id}).first()
    if row is None:
        raise NotFound("no such video")
    return row[0], row[1] or 0


def like(session: Session, user_id: int, video_id: int) -> Reaction:
    """Like (idempotent). ``total`` is the worker's count plus this call's change (the worker
    counts the like after the commit), and at least 1: a repeat that comes before the worker
    counted the first (it batches for up to ~0.1 s) showed a liked video with 0 likes."""
    owner, counted = _like_target(session, user_id, video_id)
    added = _toggle(session, Like, {"user_id": user_id, "video_id": video_id}, True,
                    Action.LIKE, user_id, video_id=video_id, author_id=owner)
    return Reaction(True, added, max(1, counted + int(added)))


def unlike(session: Session, user_id: int, video_id: int) -> Reaction:
    owner, counted = _like_target(session, user_id, video_id)
    removed = _toggle(session, Like, {"user_id": user_id, "video_id": video_id}, False,
                      Action.UNLIKE, user_id, video_id=video_id, author_id=owner)
    return Reaction(False, removed, max(0, counted - int(removed)))


def save(session: Session, user_id: int, video_id: int) -> bool:
    video = visible_video(session, user_id, video_id)
    return _toggle(session, Save, {"user_id": user_id, "video_id": video_id}, True,
                   Action.SAVE, user_id, video_id=video_id, author_id=video.owner_id)


def unsave(session: Session, user_id: int, video_id: int) -> bool:
    # No visibility check: a saved video that went private can still be removed from saves.
    owner = session.scalar(select(Video.owner_id).where(Video.id == video_id))
    return _toggle(session, Save, {"user_id": user_id, "video_id": video_id}, False,
                   Action.UNSAVE, user_id, video_id=video_id, author_id=owner)


# The actions that write in one statement on PostgreSQL (reads, then one :func:`_toggle`):
# there they run without a transaction (``serving/deps.py``'s ``as_user``): a like's round
# trips went from six (BEGIN, user, video, change, event, COMMIT) to three. Not ``block``:
# it also ends follows.
ONE_WRITE = frozenset({follow, unfollow, unblock, like, unlike, save, unsave})


def share(session: Session, user_id: int, video_id: int, channel: str) -> int:
    """Record one share (every share counts); returns the share's id."""
    video = visible_video(session, user_id, video_id)
    row = Share(user_id=user_id, video_id=video_id, channel=channel)
    session.add(row)
    session.flush()
    emit(session, UserInteraction(user_id=user_id, action=Action.SHARE, video_id=video_id,
                                  author_id=video.owner_id))
    return row.id


# --- reports ---------------------------------------------------------------------------------


def report(session: Session, reporter_id: int, target: ReportTarget, target_id: int,
           reason: ReportReason, details: str) -> tuple[Report, bool]:
    """File a report for the moderation queue; one per reporter and target (a repeat returns
    the first, ``False``). The target must exist and be visible to the reporter."""
    video_id, author_id = _report_target(session, reporter_id, target, target_id)
    added = _toggle(session, Report, {"reporter_id": reporter_id, "target_type": target.value,
                                      "target_id": target_id, "reason": reason.value,
                                      "details": details}, True, Action.REPORT, reporter_id,
                    video_id=video_id, author_id=author_id)
    row = session.scalar(select(Report).where(
        Report.reporter_id == reporter_id, Report.target_type == target,
        Report.target_id == target_id))  # fmt: skip
    assert row is not None
    return row, added


def _report_target(session: Session, reporter_id: int, target: ReportTarget,
                   target_id: int) -> tuple[int | None, int | None]:
    if target == ReportTarget.USER:
        if target_id == reporter_id:
            raise Invalid("cannot report yourself", field="target_id")
        return None, existing_user(session, target_id).id
    if target == ReportTarget.VIDEO:
        video = visible_video(session, reporter_id, target_id)
        return video.id, video.owner_id
    comment = session.get(Comment, target_id)
    if comment is None or comment.deleted_at is not None:
        raise NotFound("no such comment")
    visible_video(session, reporter_id, comment.video_id)
    return comment.video_id, comment.author_id
