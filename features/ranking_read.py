"""The for-you request's feature read: the user once, then only what changes per request.

Split in two so the feed can filter between them:

1. :meth:`RankingFeatures.user_request` / :meth:`RankingFeatures.read_user`: the user's
   profile and real-time fields (its seen set included, which the feed filters on). The feed
   sends this in the same round trip as its own Redis reads when both live on one Redis.
2. :meth:`RankingFeatures.for_candidates`: for the candidates left after filtering, the
   real-time counters (``video_realtime``), the upload metadata of videos newer than the
   batch snapshot (``video_fresh``) and the user x creator history (only the pairs
   :class:`~features.pair_index.PairIndex` says have a row), in one pipelined read; the
   batch video and creator features come from the in-memory
   :class:`~features.item_table.ItemTable`.

The columns are made by :func:`features.schema.assemble`, the function training uses, and
come back as one array per column (no DataFrame): the ranker's input as it is.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from core.config import Settings
from features import schema
from features.item_table import ItemTable
from features.online import FeatureReader, Raw, RedisBackend, Request, open_backend
from features.pair_index import PairIndex
from features.repo import VIEW_BY_NAME
from features.store import materialized_mark, repo_dir
from features.windows import minute_of, window_sums

LOAD_TIMEOUT_S = 30.0  # socket timeout of the item table's bulk loads


@dataclass(frozen=True)
class CandidateFeatures:
    """The ranker's input columns: ``items`` one array per column (a row per candidate),
    ``user`` the user's scalars (sent once)."""

    items: dict[str, np.ndarray]
    user: dict[str, Any]
    timed_out: bool = False


class RankingFeatures:
    """One per serving process: the reader, its in-memory item table, the time budget."""

    def __init__(self, settings: Settings) -> None:
        self.budget_s = settings.feature_read_timeout_ms / 1000
        # The socket timeout is the budget itself: a read runs inline in the request's thread.
        self.reader = FeatureReader(settings, socket_timeout_s=self.budget_s)
        self.backend = self.reader.backend
        self.settings = settings
        # Loading the table reads every video and creator: its own connection, bounded by
        # LOAD_TIMEOUT_S, not the per-request budget (a 20k-entity batch takes longer than 50 ms
        # to write while Redis is busy, and a load that never finishes serves defaults).
        load_backend = open_backend(settings, timeout_s=LOAD_TIMEOUT_S)
        self.table = ItemTable(load_backend, lambda: self.reader.defaults)
        self.pairs = PairIndex()

    @property
    def direct(self) -> RedisBackend | None:
        """The Redis backend when the online store is Redis (other reads may share its trip)."""
        return self.backend if isinstance(self.backend, RedisBackend) else None

    def mark(self) -> object:
        """What the item table is loaded from: the last materialization and build."""
        self.reader._refresh_meta()  # a new build's defaults (global rates) count as a change
        return materialized_mark(self.settings), self.reader._meta_mtime

    def sync(self, video_ids: np.ndarray, creator_ids: np.ndarray,
             mark: object | None = None) -> int:
        """Keep the item table and the pair index in step with the catalog and the last
        materialization."""
        mark = mark if mark is not None else self.mark()
        read = self.table.sync(mark, {"video_stats": video_ids, "creator_stats": creator_ids})
        if mark != self.pairs.mark:
            path = repo_dir(self.settings) / VIEW_BY_NAME["user_creator"].path
            if path.is_file():  # without it every pair is read (the index stays as it was)
                self.pairs.load(path, mark)
        return read

    @staticmethod
    def user_request(user_id: int) -> Request:
        return (schema.USER_REFS, {"user_id": [int(user_id)]})

    def read_user(self, user_id: int) -> Raw:
        return self._read([self.user_request(user_id)])[0]

    def seen(self, user_raw: Raw) -> np.ndarray:
        """The videos the feature stream saw the user watch (``user_realtime:seen``)."""
        got = (user_raw.get(schema.USER_LISTS["u_seen"]) or [None])[0]
        return np.asarray(got or (), np.int64)

    def for_candidates(self, user_id: int, user_raw: Raw, video_ids: np.ndarray,
                       creator_ids: np.ndarray, now_ms: int) -> CandidateFeatures:
        """The candidates' columns as of ``now_ms``; defaults (``timed_out``) past the budget."""
        batch, _ = self.table.gather(video_ids, creator_ids)
        # Upload metadata only for the videos newer than the batch snapshot: for the others
        # ``schema.assemble`` takes the snapshot's (4 of a video's 7 live fields unread).
        new = np.flatnonzero(~schema.in_snapshot(batch))
        paired = np.flatnonzero(self.pairs.has(int(user_id), creator_ids))  # rows to ask for
        live_req: list[Request] = [
            (schema.VIDEO_REALTIME_REFS, {"video_id": video_ids.tolist()}),
            (schema.PAIR_REFS, {"user_id": [int(user_id)] * len(paired),
                                "creator_id": creator_ids[paired].tolist()}),
            (schema.VIDEO_FRESH_REFS, {"video_id": video_ids[new].tolist()}),
        ]
        timed_out = False
        try:
            live, pairs, fresh = self._read(live_req)
        except (FutureTimeout, redis.TimeoutError):  # other failures: the caller degrades
            live, pairs, fresh, timed_out = {}, {}, {}, True
        return self._assemble(user_raw, batch, live, ((new, fresh, schema.VIDEO_FRESH_REFS),
                                                      (paired, pairs, schema.PAIR_REFS)),
                              video_ids, now_ms, timed_out)

    def _read(self, requests: list[Request]) -> list[Raw]:
        if self.direct is not None:
            return self.backend.read(requests)
        # Feast's own read path cannot be interrupted: bound it on the reader's pool.
        future = self.reader._pool.submit(self.backend.read, requests)
        return future.result(timeout=self.budget_s)

    def _assemble(self, user_raw: Raw, batch: dict[str, Any], live_raw: Raw,
                  partial: tuple[tuple[np.ndarray, Raw, list[str]], ...], video_ids: np.ndarray,
                  now_ms: int, timed_out: bool) -> CandidateFeatures:
        """``partial``: ``(rows, raw, refs)`` read for those rows only; defaults elsewhere."""
        n = len(video_ids)
        rows = max(n, 1)
        column = self.reader._column
        full: dict[str, Any] = {}
        for ref in schema.USER_REFS:  # one value, repeated for the per-row derivations
            col = column(user_raw, ref, 1)
            full[ref] = col * rows if isinstance(col, list) else np.repeat(col, rows)
        full |= batch
        for ref in schema.VIDEO_REALTIME_REFS:
            full[ref] = column(live_raw, ref, rows)
        for at, raw, refs in partial:
            for ref in refs:
                col = np.full(rows, self.reader.defaults[ref])
                if len(at):
                    got = column(raw, ref, len(at))
                    col = col.astype(np.result_type(col, got), copy=False)
                    col[at] = got
                full[ref] = col
        now_minute = minute_of(now_ms / 1000)
        heads = full["video_realtime:head_minute"]
        for kind in ("view", "like"):
            sums = window_sums(full[f"video_realtime:{kind}_buckets"], heads, now_minute)
            for w, values in sums.items():
                full[f"v_rt_{kind}s_{w}"] = values
        cols = schema.assemble(full, np.full(rows, now_ms, np.int64))
        user: dict[str, Any] = {c: cols[c][0].item() for c in schema.USER_COLUMNS}
        # The watch history, newest first: what a ranker with target attention reads.
        watched = full[schema.USER_LISTS[schema.HISTORY]][0]
        user[schema.HISTORY] = [int(v) for v in watched or ()]
        items = {c: cols[c][:n] for c in schema.ITEM_COLUMNS}
        return CandidateFeatures(items, user, timed_out)

    def close(self) -> None:
        self.reader.close()

