"""Account deletion: the account stops working at once and what it made disappears.

The ``users`` row stays as a tombstone (``deleted_at`` set, username, email, password and
profile scrubbed) rather than being deleted: its videos must stay as ``removed`` rows, because
the serving catalog learns about changes by ``videos.updated_at`` and would keep serving a row
that vanished. Everything else the user did is undone the way the user would undo it, each
with its ``user.interaction`` event in the same transaction (the outbox), so the ``counters``
worker takes the likes, follows and comments back out and no count drifts:

- videos -> ``removed`` (gone from every feed, list, count and comment thread);
- comments -> tombstones (replies by others keep their place, as with a normal delete);
- likes, saves and follows (both ways) -> deleted; blocks (both ways) -> deleted;
- refresh tokens -> revoked; access tokens stop at the next request (the user is loaded on
  every request and a deleted one is refused).

Reports the user filed stay for the moderators.
"""

from __future__ import annotations

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.events import Action, UserInteraction
from platform_services.bus.outbox import emit
from platform_services.storage.models import Block, Follow, User, Video, VideoStatus
from platform_services.storage.social_models import Comment, Like, Save
from platform_services.tokens import logout_everywhere

UNUSABLE_PASSWORD = "!deleted"  # not an argon2 hash: login verifies a dummy hash and fails


def is_deleted(user: User | None) -> bool:
    return user is None or user.deleted_at is not None


def delete_account(session: Session, user: User) -> None:
    """Delete ``user``'s account in the caller's transaction (see the module docstring)."""
    uid = user.id
    # First the row itself: on PostgreSQL changing the unique username locks it against the
    # foreign-key checks of likes / follows being inserted for it, so one committed just
    # before is seen by the reads below instead of slipping past them.
    user.username, user.email = f"deleted-{uid}", f"deleted-{uid}@deleted.invalid"
    user.password_hash, user.display_name, user.bio, user.avatar_url = (
        UNUSABLE_PASSWORD, None, "", None)
    user.deleted_at = utcnow()
    session.flush()
    logout_everywhere(session, uid)
    session.execute(update(Video).where(Video.owner_id == uid)
                    .values(status=VideoStatus.REMOVED))
    _undo_likes(session, uid)
    _tombstone_comments(session, uid)
    _undo_follows(session, uid)
    for video_id, owner in session.execute(
            select(Save.video_id, Video.owner_id).join(Video, Video.id == Save.video_id)
            .where(Save.user_id == uid)):
        _event(session, uid, Action.UNSAVE, video_id, owner)
    session.execute(delete(Save).where(Save.user_id == uid))
    for blocked in session.scalars(select(Block.blocked_id).where(Block.blocker_id == uid)):
        _event(session, uid, Action.UNBLOCK, None, blocked)
    session.execute(delete(Block).where(or_(Block.blocker_id == uid, Block.blocked_id == uid)))
    session.flush()


def _event(session: Session, user_id: int, action: Action, video_id: int | None,
           author_id: int | None) -> None:
    emit(session, UserInteraction(user_id=user_id, action=action, video_id=video_id,
                                  author_id=author_id))


def _undo_likes(session: Session, uid: int) -> None:
    rows = session.execute(select(Like.video_id, Video.owner_id)
                           .join(Video, Video.id == Like.video_id).where(Like.user_id == uid))
    for video_id, owner in rows.all():
        _event(session, uid, Action.UNLIKE, video_id, owner)
    session.execute(delete(Like).where(Like.user_id == uid))


def _tombstone_comments(session: Session, uid: int) -> None:
    mine = (Comment.author_id == uid, Comment.deleted_at.is_(None))
    for video_id in session.scalars(select(Comment.video_id).where(*mine)).all():
        _event(session, uid, Action.UNCOMMENT, video_id, uid)
    session.execute(update(Comment).where(*mine).values(body="", deleted_at=utcnow()))


def _undo_follows(session: Session, uid: int) -> None:
    """End follows both ways; each event is the follower's, as if they had unfollowed, so
    both sides' follower / following counts come down."""
    pairs = session.execute(select(Follow.follower_id, Follow.followee_id).where(
        or_(Follow.follower_id == uid, Follow.followee_id == uid))).all()
    for follower, followee in pairs:
        _event(session, follower, Action.UNFOLLOW, None, followee)
    session.execute(delete(Follow).where(
        or_(Follow.follower_id == uid, Follow.followee_id == uid)))
