"""The ``counters`` consumer: per-video engagement counts and per-user social counts
(followers, following, likes received) from ``user.interaction`` events.

The worker framework applies each event exactly once (its id is recorded in the same
transaction), and each batch is one atomic ``INSERT ... ON CONFLICT DO UPDATE`` of summed
deltas per row, so concurrent members and redeliveries never lose or double an update, and a
hot video or creator costs one row write per batch, not one per like."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import Connection, case, or_, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.events import Action, Event, UserInteraction
from platform_services.storage.db import upsert_insert
from platform_services.storage.models import User, VideoStats
from platform_services.storage.social_models import UserStats

_COLUMN = {
    Action.VIEW: "views",
    Action.WATCH: "views",
    Action.LIKE: "likes",
    Action.COMMENT: "comments",
    Action.SHARE: "shares",
    Action.SKIP: "skips",
    Action.REPORT: "reports",
}
TOPICS = ("user.interaction",)
COLUMNS = ("views", "likes", "comments", "shares", "skips", "reports", "watch_ms")
_UNDO = {Action.UNLIKE: "likes", Action.UNCOMMENT: "comments"}
USER_COLUMNS = ("followers", "following", "total_likes")


def apply_counts(session: Session, events: list[Event]) -> None:
    """Add a batch of interactions to ``video_stats`` (unlike subtracts a like)."""
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    for e in events:
        if not isinstance(e, UserInteraction) or e.video_id is None:
            continue
        d = deltas[e.video_id]
        if undo := _UNDO.get(e.action):
            d[undo] -= 1
        elif column := _COLUMN.get(e.action):
            d[column] += 1
        if e.watch_ms:
            d["watch_ms"] += e.watch_ms
    _add(session, VideoStats, "video_id", COLUMNS, deltas)
    _add(session, UserStats, "user_id", USER_COLUMNS, _user_deltas(session, events))


def _user_deltas(session: Session, events: list[Event]) -> dict[int, Counter[str]]:
    """Follows move both users' counts; a like moves its creator's ``total_likes``."""
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    for e in events:
        if not isinstance(e, UserInteraction) or e.author_id is None:
            continue
        if e.action in (Action.FOLLOW, Action.UNFOLLOW):
            sign = 1 if e.action == Action.FOLLOW else -1
            deltas[e.author_id]["followers"] += sign
            deltas[e.user_id]["following"] += sign
        elif e.action in (Action.LIKE, Action.UNLIKE) and e.video_id is not None:
            deltas[e.author_id]["total_likes"] += 1 if e.action == Action.LIKE else -1
    if deltas:  # an account deleted since keeps no counters (its row would break the FK)
        alive = set(session.scalars(select(User.id).where(User.id.in_(deltas))))
        deltas = {u: d for u, d in deltas.items() if u in alive}
    return deltas


# The upsert of each counters table by dialect: built once (building it and its cache key per
# batch was a fifth of the worker's CPU), run as Core (not the ORM's bulk-insert path).
_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(conn: Connection, model: type, key: str, columns: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` adding the excluded deltas, never below 0."""
    cache_key = (conn.dialect.name, model.__tablename__)
    if (stmt := _UPSERTS.get(cache_key)) is None:
        insert = upsert_insert(conn, model.__table__)
        table = model.__table__.c
        stamp = {"updated_at": insert.excluded.updated_at} if "updated_at" in table else {}
        stmt = _UPSERTS[cache_key] = insert.on_conflict_do_update(
            index_elements=[key],
            set_={c: case((table[c] + insert.excluded[c] < 0, 0),
                          else_=table[c] + insert.excluded[c]) for c in columns} | stamp,
        )
    return stmt


def _add(session: Session, model: type, key: str, columns: tuple[str, ...],
         deltas: dict[int, Counter[str]]) -> None:
    """Add ``deltas`` to ``model``'s counters, creating rows as needed, never below zero."""
    if not deltas:
        return
    # One INSERT ... ON CONFLICT DO UPDATE: adds the deltas atomically, whoever else writes.
    # Sorted: concurrent members lock rows in one order, so they cannot deadlock.
    # A table with ``updated_at`` (``video_stats``) gets each changed row stamped: readers
    # poll by it (serving's catalog).
    stamp = {"updated_at": utcnow()} if "updated_at" in model.__table__.c else {}
    rows = [{key: k, **{c: d.get(c, 0) for c in columns}, **stamp}
            for k, d in sorted(deltas.items())]
    conn = session.connection()
    conn.execute(_upsert(conn, model, key, columns), rows)
    # A row created by a negative delta (an undo whose do was never counted) starts at zero:
    # one UPDATE for every column.
    if negative := [k for k, d in deltas.items() if any(v < 0 for v in d.values())]:
        table = model.__table__.c
        conn.execute(update(model.__table__).where(
            table[key].in_(negative), or_(*(table[c] < 0 for c in columns))
        ).values({c: case((table[c] < 0, 0), else_=table[c]) for c in columns}))
