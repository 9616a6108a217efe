"""Profiles: lookup by id or username, owner-only edits, admin-only verification and roles,
and the counters a profile shows.

``followers``, ``following`` and ``total_likes`` are kept by the ``counters`` worker
(:mod:`platform_services.counters`, exactly once per event). ``videos`` is counted live from
the ``(owner_id, created_at)`` index instead: what it counts depends on who asks (private and
followers-only videos count only for those who may see them), which a stored counter cannot say.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from platform_services.errors import NotFound
from platform_services.social import blocked_either_way, follows
from platform_services.storage.models import Role, User, Video, VideoStatus, Visibility
from platform_services.storage.social_models import UserStats

# Profile fields an owner may change.
EDITABLE = ("display_name", "bio", "avatar_url")


@dataclass(frozen=True)
class Counts:
    followers: int
    following: int
    videos: int
    total_likes: int


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("no such user")
    return user


def by_username(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(func.lower(User.username) == username.lower(),
                                             User.deleted_at.is_(None)))
    if user is None:
        raise NotFound("no such user")
    return user


def visible_video_count(session: Session, owner_id: int, viewer_id: int) -> int:
    """Ready videos of ``owner_id`` that ``viewer_id`` may see (the feed's visibility rule)."""
    q = select(func.count()).select_from(Video).where(
        Video.owner_id == owner_id, Video.status == VideoStatus.READY)
    if viewer_id != owner_id:
        if blocked_either_way(session, viewer_id, owner_id):
            return 0
        allowed = [Video.visibility == Visibility.PUBLIC]
        if follows(session, viewer_id, owner_id):
            allowed.append(Video.visibility == Visibility.FOLLOWERS)
        q = q.where(or_(*allowed))
    return session.scalar(q) or 0


def counts(session: Session, user_id: int, viewer_id: int) -> Counts:
    stats = session.get(UserStats, user_id)
    return Counts(
        followers=stats.followers if stats else 0,
        following=stats.following if stats else 0,
        videos=visible_video_count(session, user_id, viewer_id),
        total_likes=stats.total_likes if stats else 0,
    )


def update_profile(session: Session, user: User, changes: dict[str, str | None]) -> User:
    """Apply the owner's ``changes`` (only :data:`EDITABLE` fields; the route checks owner)."""
    for name, value in changes.items():
        if name not in EDITABLE:
            raise ValueError(f"{name} is not an editable profile field")
        setattr(user, name, value)
    session.flush()
    return user


def set_verified(session: Session, user_id: int, verified: bool) -> User:
    user = get_user(session, user_id)
    user.verified = verified
    session.flush()
    return user


def set_role(session: Session, user_id: int, role: Role) -> User:
    """Change a role; the user's access tokens keep their old role claim for at most their
    15 minutes, but the role dependencies also read the database, so a demotion is at once."""
    user = get_user(session, user_id)
    user.role = role
    session.flush()
    return user
