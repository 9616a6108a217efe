"""The ``counters`` consumer: per-video engagement counts from ``user.interaction`` events."""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import case
from sqlalchemy.orm import Session

from core.events import Action, Event, UserInteraction
from platform_services.storage.db import upsert_insert
from platform_services.storage.models import VideoStats

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


def apply_counts(session: Session, events: list[Event]) -> None:
    """Add a batch of interactions to ``video_stats`` (unlike subtracts a like)."""
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    for e in events:
        if not isinstance(e, UserInteraction) or e.video_id is None:
            continue
        d = deltas[e.video_id]
        if e.action == Action.UNLIKE:
            d["likes"] -= 1
        elif column := _COLUMN.get(e.action):
            d[column] += 1
        if e.watch_ms:
            d["watch_ms"] += e.watch_ms
    if not deltas:
        return
    # One INSERT ... ON CONFLICT DO UPDATE: adds the deltas atomically, whoever else writes.
    rows = [{"video_id": v, **{c: d.get(c, 0) for c in COLUMNS}} for v, d in deltas.items()]
    stmt = upsert_insert(session, VideoStats)
    table = VideoStats.__table__.c
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["video_id"],
            set_={
                c: case((table[c] + stmt.excluded[c] < 0, 0), else_=table[c] + stmt.excluded[c])
                for c in COLUMNS
            },
        ),
        rows,
    )
