"""The semantic half of search: the documents' MiniLM vectors in one in-process matrix.

A query is one matrix-vector product over every document; the best ``k`` by cosine similarity
come back. Past :data:`REDUCE_FROM` documents the product reads a copy projected on the
:data:`REDUCED_DIM` principal directions of the vectors instead (100k x 384 float32 is 150 MB,
memory-bound: 10-20 ms a query on this machine; projected to 128 dimensions it is a third of
that), keeps ``RERANK * k`` rows and re-scores those exactly: the cosines returned are exact,
the approximation only decides which rows are re-scored. The matrix is
refreshed from ``search_embeddings`` by ``indexed_at`` (rows indexed since the previous refresh
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
from platform_services.search.models import SearchEmbedding

log = logging.getLogger(__name__)
OVERLAP = timedelta(seconds=5)  # a document committed this late is still picked up
REDUCE_FROM = 20_000  # documents; below, the exact product costs ~2 ms
REDUCED_DIM = 128
RERANK = 10  # the projected scan keeps RERANK * k rows for exact re-scoring
FIT_SAMPLE = 20_000  # rows the projection is fitted on (once: MiniLM's space does not drift)


class _Projection:
    """The principal directions of the document vectors and every row projected on them."""

    def __init__(self, matrix: np.ndarray, n: int) -> None:
        rng = np.random.default_rng(0)
        sample = matrix[:n] if n <= FIT_SAMPLE else matrix[rng.choice(n, FIT_SAMPLE, False)]
        # Uncentred: the directions that keep inner products (not variances) best.
        _, vectors = np.linalg.eigh(sample.T @ sample)
        self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :REDUCED_DIM], np.float32)
        self.rows = np.ascontiguousarray(matrix @ self.basis)

    def grown(self, matrix: np.ndarray, n: int) -> _Projection:
        """The same directions over a larger matrix (its first ``n`` rows already known)."""
        out = object.__new__(_Projection)
        out.basis = self.basis
        out.rows = np.zeros((len(matrix), REDUCED_DIM), np.float32)
        out.rows[:n] = self.rows[:n]
        return out


class SemanticIndex:
    def __init__(self, sessions: sessionmaker[Session], refresh_s: float = 2.0) -> None:
        self.sessions, self.refresh_s = sessions, refresh_s
        # (ids, matrix, id -> row, rows, projection), replaced as one tuple: a search reads
        # one consistent set.
        self._state: tuple[np.ndarray, np.ndarray, dict[int, int], int, _Projection | None] = (
            np.zeros(0, np.int64), np.zeros((0, 0), np.float32), {}, 0, None)
        self._since: datetime | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._state[3]

    def refresh(self) -> int:
        """Apply documents indexed since the previous refresh started (with ``OVERLAP`` for
        transactions that committed late); returns how many rows were read."""
        with self._lock:
            started = utcnow()
            q = select(SearchEmbedding.video_id, SearchEmbedding.embedding,
                       SearchEmbedding.indexed_at)
            if self._since is not None:
                q = q.where(SearchEmbedding.indexed_at >= self._since - OVERLAP)
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
        ids, matrix, row, n, projection = self._state
        dim = len(from_blob(rows[0][1]))
        new = list(dict.fromkeys(int(r[0]) for r in rows if int(r[0]) not in row))
        if n + len(new) > len(ids) or matrix.shape[1] != dim:
            cap = max(1024, int((n + len(new)) * 1.5))
            grown = np.zeros((cap, dim), np.float32)
            grown[:n] = matrix[:n] if matrix.shape[1] == dim else 0
            ids = np.concatenate([ids[:n], np.zeros(cap - n, np.int64)])
            matrix = grown
            projection = (projection.grown(matrix, n)
                          if projection is not None and dim == len(projection.basis) else None)
        row = row | {v: n + i for i, v in enumerate(new)} if new else row
        for video_id in new:
            ids[row[video_id]] = video_id
        written = [row[int(video_id)] for video_id, _, _ in rows]
        matrix[written] = np.stack([from_blob(blob) for _, blob, _ in rows])
        if projection is not None:
            projection.rows[written] = matrix[written] @ projection.basis
        elif n + len(new) >= REDUCE_FROM:
            projection = _Projection(matrix, n + len(new))
        self._state = (ids, matrix, row, n + len(new), projection)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` most similar (video_id, cosine) pairs, best first."""
        ids, matrix, _, n, projection = self._state
        if not n:
            return []
        query = np.asarray(query, np.float32)
        k = min(k, n)
        if projection is None or RERANK * k >= n:
            rows = np.arange(n)
            sims = matrix[:n] @ query
        else:  # the projected scan picks the rows, the exact product scores them
            approx = projection.rows[:n] @ (query @ projection.basis)
            rows = np.argpartition(-approx, RERANK * k - 1)[:RERANK * k]
            sims = matrix[rows] @ query
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(ids[rows[i]]), float(sims[i])) for i in top]

    def similarity(self, query: np.ndarray, video_ids: list[int]) -> dict[int, float]:
        """Cosine similarity of the query to each of ``video_ids`` that has a vector."""
        _, matrix, row, _, _ = self._state
        have = [v for v in video_ids if v in row]
        if not have:
            return {}
        sims = matrix[[row[v] for v in have]] @ np.asarray(query, np.float32)
        return dict(zip(have, sims.tolist(), strict=True))
