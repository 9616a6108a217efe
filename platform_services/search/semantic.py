"""The semantic half of search: the documents' MiniLM vectors in one in-process matrix.

A query is one matrix-vector product over every document (100k x 384 float32 is ~150 MB and a
few milliseconds on one core); the best ``k`` by cosine similarity come back. The matrix is
refreshed from ``search_videos`` by ``indexed_at`` (rows indexed since the previous refresh
started, with a few seconds' overlap for late commits) every ``refresh_s`` by a background
thread (:meth:`SemanticIndex.run`), never on a search. A document deleted since
stays in the matrix harmlessly: every hit is re-read from ``search_videos`` with the filters,
so a stale id finds no row and drops out.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from platform_services.search.documents import from_blob
from platform_services.search.models import SearchVideo

log = logging.getLogger(__name__)
OVERLAP = timedelta(seconds=5)  # a document committed this late is still picked up


class SemanticIndex:
    def __init__(self, sessions: sessionmaker[Session], refresh_s: float = 2.0) -> None:
        self.sessions, self.refresh_s = sessions, refresh_s
        # (ids, matrix, id -> row), replaced as one tuple: a search reads one consistent set.
        self._state: tuple[np.ndarray, np.ndarray, dict[int, int], int] = (
            np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {}, 0)
        self._since: datetime | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._state[3]

    def refresh(self) -> int:
        """Apply documents indexed since the previous refresh started (with ``OVERLAP`` for
        transactions that committed late); returns how many rows were read."""
        with self._lock:
            started = utcnow()
            q = select(SearchVideo.video_id, SearchVideo.embedding, SearchVideo.indexed_at
                       ).where(SearchVideo.embedding.is_not(None))
            if self._since is not None:
                q = q.where(SearchVideo.indexed_at >= self._since - OVERLAP)
            with self.sessions() as s:
                rows = s.execute(q).all()
            if rows:
                self._apply(rows)
            self._since = started
            return len(rows)

    def run(self, stop: threading.Event) -> None:
        """Refresh every ``refresh_s`` until ``stop`` (a daemon thread's loop: searches never
        wait for a refresh)."""
        while not stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # the database may be away for a while: keep the last matrix
                log.exception("search: semantic index refresh failed")

    def _apply(self, rows: list) -> None:
        """Updates are written in place (a reader may see one row half-new: harmless for a
        ranking); new rows go past the published length, into room grown 1.5x at a time, so
        a refresh copies the matrix only when it grows."""
        ids, matrix, row, n = self._state
        dim = len(from_blob(rows[0][1]))
        new = list(dict.fromkeys(int(r[0]) for r in rows if int(r[0]) not in row))
        if n + len(new) > len(ids) or matrix.shape[1] != dim:
            cap = max(1024, int((n + len(new)) * 1.5))
            grown = np.zeros((cap, dim), np.float32)
            grown[:n] = matrix[:n] if matrix.shape[1] == dim else 0
            ids = np.concatenate([ids[:n], np.zeros(cap - n, np.int64)])
            matrix = grown
        row = row | {v: n + i for i, v in enumerate(new)} if new else row
        for video_id in new:
            ids[row[video_id]] = video_id
        for video_id, blob, _ in rows:
            matrix[row[int(video_id)]] = from_blob(blob)
        self._state = (ids, matrix, row, n + len(new))

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` most similar (video_id, cosine) pairs, best first."""
        ids, matrix, _, n = self._state
        if not n:
            return []
        sims = matrix[:n] @ np.asarray(query, np.float32)
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(ids[i]), float(sims[i])) for i in top]

    def similarity(self, query: np.ndarray, video_ids: list[int]) -> dict[int, float]:
        """Cosine similarity of the query to each of ``video_ids`` that has a vector."""
        _, matrix, row, _ = self._state
        have = [v for v in video_ids if v in row]
        if not have:
            return {}
        sims = matrix[[row[v] for v in have]] @ np.asarray(query, np.float32)
        return dict(zip(have, sims.tolist(), strict=True))
