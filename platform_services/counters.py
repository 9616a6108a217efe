"""The ``counters`` consumer: per-video engagement counts from ``user.interaction`` events."""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.events import Action, Event, UserInteraction
from platform_services.bus.tables import VideoStats

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
    rows = {
        s.video_id: s
        for s in session.scalars(
            select(VideoStats).where(VideoStats.video_id.in_(deltas)).with_for_update()
        )
    }
    for video_id, d in deltas.items():
        row = rows.get(video_id)
        if row is None:
            row = VideoStats(
                video_id=video_id,
                views=0,
                likes=0,
                comments=0,
                shares=0,
                skips=0,
                reports=0,
                watch_ms=0,
            )
            session.add(row)
        for column, n in d.items():
            setattr(row, column, max(0, getattr(row, column) + n))
