"""Who may see what: the filters every feed applies to its candidates, as one vector mask.

A video is shown to a viewer only if it exists, is ready (not uploaded, processing, failed or
removed by moderation), is not the viewer's own, is public or followers-only from a creator
the viewer follows (private videos are never shown to anyone else), and its creator is not
one the viewer blocked or who blocked the viewer. The for-you feed also drops what the viewer
has already seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, select, union
from sqlalchemy.orm import Session

from candidate_gen.catalog import FOLLOWERS, PUBLIC, Snapshot
from platform_services.storage.models import Block, Follow, User


@dataclass(frozen=True)
class Viewer:
    user_id: int
    region: str | None
    followees: np.ndarray  # sorted int64
    blocked: np.ndarray  # sorted int64: blocked by the viewer, or blocking the viewer


# Built once: building a statement and its cache key per request was ~40 % of the viewer read.
_FOLLOWEES = select(Follow.followee_id).where(Follow.follower_id == bindparam("user"))
_BLOCKED = union(select(Block.blocked_id).where(Block.blocker_id == bindparam("user")),
                 select(Block.blocker_id).where(Block.blocked_id == bindparam("user")))


def load_viewer(session: Session, user: User) -> Viewer:
    """The viewer's social context (indexed range reads)."""
    params = {"user": user.id}
    follows = session.scalars(_FOLLOWEES, params)
    blocks = session.scalars(_BLOCKED, params)
    return Viewer(user.id, user.region, np.sort(np.fromiter(follows, np.int64)),
                  np.sort(np.fromiter(blocks, np.int64)))


def visible(snap: Snapshot, viewer: Viewer, ids: np.ndarray) -> np.ndarray:
    """Mask of ``ids`` the viewer may be shown at all."""
    ids = np.asarray(ids, np.int64)
    ok = snap.known(ids)
    v = ids[ok]
    owner = snap.owner[v]
    vis = snap.visibility[v]
    follows = np.isin(owner, viewer.followees, assume_unique=False)
    ok[ok] = (snap.ready[v] & (owner != viewer.user_id)
              & ((vis == PUBLIC) | ((vis == FOLLOWERS) & follows))
              & ~np.isin(owner, viewer.blocked))
    return ok
