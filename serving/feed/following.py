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
from platform_services.signing import TokenError, sign, unsign
from platform_services.storage.models import User
from serving.feed.context import UnknownUser
from serving.feed.cursor import CursorError
from serving.feed.degrade import Trace
from serving.feed.filters import Viewer, visible
from serving.feed.render import MediaUrls, render
from serving.feed.services import FeedServices

KIND = "following"
MODEL_VERSION = "following:newest"


class FollowingFeed:
    """Pages of one viewer's following feed over a process's feed services."""

    def __init__(self, svc: FeedServices, urls: MediaUrls) -> None:
        self.svc, self.urls = svc, urls
        self.cfg = fanout.FanoutConfig.from_settings(svc.settings)

    def page(self, user_id: int, size: int, cursor: str | None, trace: Trace) -> dict:
        """One page; raises :class:`~serving.feed.cursor.CursorError` for a bad cursor."""
        secret = self.svc.settings.signing_secret
        assert secret is not None
        before, offset = None, 0
        if cursor:
            try:
                body = unsign(secret, KIND, user_id, cursor)
                before, offset = (int(body["t"]), int(body["v"])), int(body["o"])
            except (TokenError, KeyError, TypeError, ValueError) as exc:
                raise CursorError(str(exc) if isinstance(exc, TokenError)
                                  else "malformed cursor") from None
        with self.svc.sessions() as session:
            user = session.get(User, user_id)
            if user is None or user.deleted_at is not None:
                raise UnknownUser(user_id)
            return self._page(session, user, size, before, offset, trace)

    def _page(self, session: Session, user: User, size: int, before: tuple[int, int] | None,
              offset: int, trace: Trace) -> dict:
        secret = self.svc.settings.signing_secret
        assert secret is not None
        with trace.stage("candidates"):
            graph = fanout.viewer_graph(session, user.id, self.cfg.threshold)
            follows = set(graph.followees)
            viewer = Viewer(user.id, user.region, np.sort(np.asarray(graph.followees, np.int64)),
                            np.sort(np.fromiter(graph.blocked, np.int64, len(graph.blocked))))
            picked, more = self._collect(session, user.id, follows, graph.big, viewer, before,
                                         size, trace)
        with trace.stage("page"):
            ids = np.fromiter((i.video_id for i in picked), np.int64, len(picked))
            pos = np.arange(offset, offset + len(ids), dtype=np.int64)
            sources = np.full(len(ids), CODE["following"], np.uint8)
            request_id = self._log_exposure(user, ids, offset)
            videos = render(self.svc.catalog.snapshot, ids, sources, pos, self.urls,
                            MODEL_VERSION, request_id)
            token = None
            if more and picked:
                last = picked[-1]
                token = sign(secret, KIND, user.id,
                             {"t": last.ts_ms, "v": last.video_id, "o": offset + len(ids)})
        return {"videos": videos, "next_cursor": token, "has_more": token is not None}

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

    def _log_exposure(self, user: User, ids: np.ndarray, offset: int) -> str:
        request_id = uuid.uuid4().hex
        if len(ids):
            self.svc.exposures.put(ExperimentExposure(
                user_id=user.id, request_id=request_id, model_version=MODEL_VERSION,
                video_ids=ids.tolist(), sources=[KIND] * len(ids), first_position=offset))
        return request_id
