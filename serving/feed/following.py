"""``GET /feed/following``: the hybrid following feed, newest first, with a keyset cursor.

Each page merges the viewer's pushed set (``feed:{user_id}`` in Redis, small creators; see
:mod:`platform_services.fanout`) with a pull of the big creators' recent videos from the
database, both strictly older than the cursor's ``(ts_ms, video_id)``. Every candidate is then
checked against the live follow set (an unfollowed creator vanishes from the next page), the
blocks both ways, and the catalog's visibility rules (ready, approved, not private; deleted
videos are gone from it). Without Redis every followee is pulled (degraded, still correct).
"""

from __future__ import annotations

import uuid

import numpy as np
import redis
from sqlalchemy.orm import Session

from candidate_gen.sources import CODE
from core.events import ExperimentExposure
from platform_services import fanout
from platform_services.bus.outbox import emit
from platform_services.signing import TokenError, sign, unsign
from platform_services.social import blocked_users_either_way
from platform_services.storage.models import User
from serving.feed.degrade import Trace
from serving.feed.filters import Viewer, visible
from serving.feed.pipeline import Feeds
from serving.feed.render import render

KIND = "following"
MODEL_VERSION = "following:newest"


class FollowingFeed:
    """Pages of one viewer's following feed over a process's feed services."""

    def __init__(self, feeds: Feeds) -> None:
        self.svc, self.urls = feeds.svc, feeds.urls
        self.cfg = fanout.FanoutConfig.from_settings(feeds.svc.settings)

    def page(self, session: Session, user: User, size: int, cursor: str | None,
             trace: Trace) -> dict:
        """One page; raises :class:`~platform_services.signing.TokenError` for a bad cursor."""
        secret = self.svc.settings.signing_secret
        assert secret is not None
        before, offset = None, 0
        if cursor:
            body = unsign(secret, KIND, user.id, cursor)
            try:
                before, offset = (int(body["t"]), int(body["v"])), int(body["o"])
            except (KeyError, TypeError, ValueError):
                raise TokenError("malformed cursor") from None
        with trace.stage("candidates"):
            followees, big = fanout.followees_split(session, user.id, self.cfg.threshold)
            follows = set(followees)
            viewer = Viewer(user.id, user.region, np.sort(np.asarray(followees, np.int64)),
                            np.sort(np.fromiter(blocked_users_either_way(session, user.id),
                                                np.int64)))
            picked, more = self._collect(session, user.id, follows, big, viewer, before, size,
                                         trace)
        with trace.stage("page"):
            ids = np.fromiter((i.video_id for i in picked), np.int64, len(picked))
            pos = np.arange(offset, offset + len(ids), dtype=np.int64)
            sources = np.full(len(ids), CODE["following"], np.uint8)
            items = render(self.svc.catalog.snapshot, ids, sources, pos, self.urls)
            token = None
            if more and picked:
                last = picked[-1]
                token = sign(secret, KIND, user.id,
                             {"t": last.ts_ms, "v": last.video_id, "o": offset + len(ids)})
            request_id = self._log_exposure(session, user, ids, offset)
        return {"items": items, "next_cursor": token, "has_more": token is not None,
                "request_id": request_id, "model_version": MODEL_VERSION}

    def _collect(self, session: Session, user_id: int, follows: set[int], big: set[int],
                 viewer: Viewer, before: tuple[int, int] | None, size: int,
                 trace: Trace) -> tuple[list[fanout.Item], bool]:
        """Up to ``size`` visible items after ``before`` and whether any remain."""
        snap, want = self.svc.catalog.snapshot, size + 1
        picked: list[fanout.Item] = []
        for _ in range(8):  # each round looks twice as far; hidden items are skipped
            batch = 2 * want
            cands, exhausted = self._candidates(session, user_id, follows, big, before, batch,
                                                trace)
            fresh = [c for c in cands if c.owner_id in follows]
            if fresh:
                ids = np.fromiter((c.video_id for c in fresh), np.int64, len(fresh))
                ok = visible(snap, viewer, ids)
                picked += [c for c, good in zip(fresh, ok.tolist(), strict=True) if good]
            if len(picked) >= want or exhausted or not cands:
                break
            before, want = cands[-1].key, 2 * want
        return picked[:size], len(picked) > size

    def _candidates(self, session: Session, user_id: int, follows: set[int], big: set[int],
                    before: tuple[int, int] | None, n: int,
                    trace: Trace) -> tuple[list[fanout.Item], bool]:
        """The newest ``n`` of (pushed + pulled), de-duplicated; ``True`` when both sources
        gave fewer than asked (nothing older is left)."""
        pull_from, pushed = big, []
        try:
            pushed = fanout.read_pushed(session, self.svc.redis, user_id,
                                        sorted(follows - big), self.cfg, before, n)
        except redis.RedisError as exc:
            trace.degrade("cache", exc)
            pull_from = follows  # without the pushed sets everyone is pulled
        pulled = fanout.pull(session, sorted(pull_from), self.cfg, before, n)
        merged = {i.video_id: i for i in [*pushed, *pulled]}
        items = sorted(merged.values(), key=lambda i: i.key, reverse=True)[:n]
        return items, len(pushed) < n and len(pulled) < n

    def _log_exposure(self, session: Session, user: User, ids: np.ndarray,
                      offset: int) -> str:
        request_id = uuid.uuid4().hex
        if len(ids):
            emit(session, ExperimentExposure(
                user_id=user.id, request_id=request_id, model_version=MODEL_VERSION,
                video_ids=ids.tolist(), sources=[KIND] * len(ids), first_position=offset))
            session.commit()
        return request_id
