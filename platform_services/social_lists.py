"""The lists the app shows: a user's followers, who a user follows, a user's videos and the
caller's saved videos, newest first, a keyset page at a time.

A cursor is ``<microseconds since the epoch>_<id>`` of the last row shown: the next page is
the rows strictly before it in ``(created_at, id)`` order, one range of an index
(``ix_follows_followee_created``, ``ix_follows_follower_created``, ``ix_saves_user_created``,
``ix_videos_owner_id_created_at``),
so a page costs the same on the millionth follower as on the first, and rows added meanwhile
neither repeat nor shift later pages. Users across a block with the viewer and deleted
accounts are left out; saved videos the viewer may no longer see (gone private,
followers-only after an unfollow, removed, across a block) are left out in the same query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from platform_services.errors import Invalid
from platform_services.social import blocked_either_way_ids, existing_user, visible_to
from platform_services.storage.models import Follow, User, Video, VideoStatus
from platform_services.storage.social_models import Save

# ``<microseconds>_<id>``; ids start at 0 (a loaded data set keeps its own).
CURSOR = re.compile(r"(0|[1-9][0-9]{0,17})_(0|[1-9][0-9]{0,18})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Page:
    rows: list[Any]  # (created_at, entity) pairs
    next_cursor: str | None


def encode_cursor(at: datetime, row_id: int) -> str:
    return f"{(at - _EPOCH) // timedelta(microseconds=1)}_{row_id}"


def parse_cursor(text: str, field: str = "cursor") -> tuple[datetime, int]:
    """``(created_at, id)`` of a cursor; :class:`Invalid` naming ``field`` otherwise."""
    m = CURSOR.fullmatch(text)
    if m is None or int(m.group(2)) > 2**63 - 1:
        raise Invalid("not a cursor of this list", field=field)
    try:
        at = _EPOCH + timedelta(microseconds=int(m.group(1)))
    except OverflowError:
        raise Invalid("not a cursor of this list", field=field) from None
    return at, int(m.group(2))


def _page(session: Session, stmt: Any, at_col: Any, id_col: Any, cursor: str | None,
          limit: int) -> Page:
    if cursor is not None:
        # A plain tuple on the right: its binds take the columns' types (UTC on SQLite too).
        stmt = stmt.where(tuple_(at_col, id_col) < parse_cursor(cursor))
    rows = session.execute(stmt.order_by(at_col.desc(), id_col.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([(r[0], r[1]) for r in rows],
                encode_cursor(rows[-1][0], rows[-1][2]) if more else None)


def _people(session: Session, viewer_id: int, user_id: int, mine: Any, theirs: Any,
            cursor: str | None, limit: int) -> Page:
    existing_user(session, user_id)
    stmt = (select(Follow.created_at, User, theirs).join(User, User.id == theirs)
            .where(mine == user_id, User.deleted_at.is_(None),
                   theirs.not_in(blocked_either_way_ids(viewer_id))))
    return _page(session, stmt, Follow.created_at, theirs, cursor, limit)


def followers(session: Session, viewer_id: int, user_id: int, cursor: str | None,
              limit: int) -> Page:
    """Who follows ``user_id``: (followed_at, User) pairs, newest first."""
    return _people(session, viewer_id, user_id, Follow.followee_id, Follow.follower_id,
                   cursor, limit)


def following(session: Session, viewer_id: int, user_id: int, cursor: str | None,
              limit: int) -> Page:
    """Whom ``user_id`` follows: (followed_at, User) pairs, newest first."""
    return _people(session, viewer_id, user_id, Follow.follower_id, Follow.followee_id,
                   cursor, limit)


def saved(session: Session, user_id: int, cursor: str | None, limit: int) -> Page:
    """``user_id``'s saved videos they may still see: (saved_at, Video) pairs, newest first."""
    stmt = (select(Save.created_at, Video, Save.video_id).join(Video, Video.id == Save.video_id)
            .where(Save.user_id == user_id, visible_to(user_id)))
    return _page(session, stmt, Save.created_at, Save.video_id, cursor, limit)


def videos(session: Session, viewer_id: int, user_id: int, cursor: str | None,
           limit: int) -> Page:
    """``user_id``'s videos the viewer may see (all but removed ones for their owner):
    (created_at, Video) pairs, newest first, one range of ``ix_videos_owner_id_created_at``."""
    existing_user(session, user_id)
    stmt = (select(Video.created_at, Video, Video.id)
            .where(Video.owner_id == user_id, Video.status != VideoStatus.REMOVED,
                   visible_to(viewer_id)))
    return _page(session, stmt, Video.created_at, Video.id, cursor, limit)


def followed_among(session: Session, viewer_id: int, user_ids: list[int]) -> set[int]:
    """Which of ``user_ids`` the viewer follows (one indexed read for a page)."""
    if not user_ids:
        return set()
    return set(session.scalars(select(Follow.followee_id).where(
        Follow.follower_id == viewer_id, Follow.followee_id.in_(user_ids))))
