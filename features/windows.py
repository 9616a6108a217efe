"""Minute buckets: the one definition of the real-time windows, for stream, serving and training.

The stream job pushes a video's last :data:`N_BUCKETS` per-minute counts (newest first) and
the minute of the newest bucket (``head_minute``), not ready-made window totals: a total
pushed at 12:00 would still claim "5 views in the last 5 minutes" at 12:30 if nothing
happened since. Readers shift the buckets by their own clock (:func:`window_sums`), and the
training-set builder counts the log with the same minute arithmetic (:func:`log_window_counts`),
so serving and training see the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.clock import DAY_MS

BUCKET_S = 60
N_BUCKETS = 60  # one hour of minutes
WINDOWS_MIN: dict[str, int] = {"5m": 5, "1h": 60}
# A gap longer than this between two of a user's events starts a new session.
SESSION_GAP_S = 30 * 60


def minute_of(ts_s: float) -> int:
    """The epoch minute containing ``ts_s`` (seconds since the epoch)."""
    return int(ts_s // BUCKET_S)


def pack(counts: Sequence[int]) -> bytes:
    """Minute counts (newest first) as the pushed value: little-endian int32, at most
    :data:`N_BUCKETS`, trailing empty minutes dropped (a quiet video's value stays short).

    Packed bytes rather than a list feature: a reader turns 500 videos' buckets into one
    matrix with ``np.frombuffer`` instead of decoding 30,000 list elements.
    """
    out = np.asarray(counts[:N_BUCKETS], "<i4")
    nonzero = np.flatnonzero(out)
    return out[: nonzero[-1] + 1].tobytes() if len(nonzero) else b""


def window_sums(
    buckets: Sequence[bytes], head_minute: Sequence[int], now_minute: int
) -> dict[str, np.ndarray]:
    """Per row and window: the total as of ``now_minute`` from buckets ending at ``head_minute``.

    Bucket ``i`` of a row (see :func:`pack`) holds minute ``head_minute - i``; a window of
    ``w`` minutes covers minutes ``now_minute - w + 1 .. now_minute``. A head ahead of the
    reader's clock counts as now; rows without buckets (no recent events) are 0.
    """
    n = len(buckets)
    out = {name: np.zeros(n, np.int64) for name in WINDOWS_MIN}
    rows = [i for i, b in enumerate(buckets) if b]
    if not rows:
        return out
    size = N_BUCKETS * 4  # short values are padded with empty minutes
    blob = b"".join(buckets[i][:size].ljust(size, b"\0") for i in rows)
    counts = np.frombuffer(blob, "<i4").reshape(len(rows), N_BUCKETS)
    shift = np.maximum(0, now_minute - np.asarray(head_minute, np.int64)[rows])
    age = np.arange(N_BUCKETS)[None, :] + shift[:, None]  # minutes before now
    for name, w in WINDOWS_MIN.items():
        out[name][rows] = np.maximum(0, np.where(age < w, counts, 0).sum(1))
    return out


class EventIndex:
    """Weighted events per entity sorted by time, answering "sum over [t0, t1)" in bulk.

    Entities are int64 codes; times are int64 milliseconds. Every query is a binary search
    over one sorted key array (entity rank * span + time), so millions of (entity, time)
    queries cost a few vectorised passes, not a Python loop.
    """

    MARGIN_MS = 366 * DAY_MS  # queries may reach a year before the first event or past the last

    def __init__(
        self, entity: np.ndarray, ts_ms: np.ndarray, weights: dict[str, np.ndarray] | None = None
    ) -> None:
        entity = np.asarray(entity, dtype=np.int64)
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        self.entities = np.unique(entity)
        self.t0 = (int(ts_ms.min()) if len(ts_ms) else 0) - self.MARGIN_MS
        self.span = (int(ts_ms.max()) if len(ts_ms) else 0) + self.MARGIN_MS - self.t0 + 1
        if len(self.entities) * self.span >= 2**62:
            raise ValueError("EventIndex: too many entities for this time span")
        keys = np.searchsorted(self.entities, entity) * self.span + (ts_ms - self.t0)
        self.order = np.argsort(keys, kind="stable")  # sorted position -> input row
        self.keys = keys[self.order]
        self.cum = {
            name: np.concatenate([[0.0], np.cumsum(np.asarray(w, dtype=np.float64)[self.order])])
            for name, w in (weights or {}).items()
        }

    def _find(self, entity: np.ndarray, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the sorted position of the first event at or after it, and the first
        position of its entity; both equal (an empty range) for an entity without events."""
        entity = np.asarray(entity, dtype=np.int64)
        n = len(self.entities)
        rank = np.searchsorted(self.entities, entity).clip(max=max(n - 1, 0))
        known = self.entities[rank] == entity if n else np.zeros(len(entity), bool)
        rel = (np.asarray(ts_ms, dtype=np.int64) - self.t0).clip(0, self.span - 1)
        first = np.searchsorted(self.keys, rank * self.span, side="left")
        at = np.searchsorted(self.keys, rank * self.span + rel, side="left")
        return np.where(known, at, first), first

    def sum_before(self, name: str, entity: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Per query: the sum of weight ``name`` over the entity's events with time < ts."""
        at, first = self._find(entity, ts_ms)
        return self.cum[name][at] - self.cum[name][first]

    def window(self, name: str, entity: np.ndarray, t_end_ms: np.ndarray, w_ms: int) -> np.ndarray:
        """Per query: the sum over the entity's events with ``t_end - w <= time < t_end``."""
        t_end_ms = np.asarray(t_end_ms, dtype=np.int64)
        return self.sum_before(name, entity, t_end_ms) - self.sum_before(
            name, entity, t_end_ms - w_ms
        )

    def last_before(self, entity: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Per query: the input row of the entity's newest event with time < ts, or -1."""
        at, first = self._find(entity, ts_ms)
        return np.where(at > first, self.order[(at - 1).clip(0)], -1)


def log_window_counts(index: EventIndex, name: str, entity: np.ndarray, at_ms: np.ndarray) -> dict:
    """The stream's windows as a reader at ``at_ms`` would see them, computed from the log.

    Counts events strictly before ``at_ms`` (an impression is served before its own events)
    whose minute lies in the window's minutes ending with ``at_ms``'s minute.
    """
    at_ms = np.asarray(at_ms, dtype=np.int64)
    minute_start = (at_ms // (BUCKET_S * 1000)) * BUCKET_S * 1000
    out = {}
    for label, w in WINDOWS_MIN.items():
        first = minute_start - (w - 1) * BUCKET_S * 1000
        out[label] = (
            index.sum_before(name, entity, at_ms) - index.sum_before(name, entity, first)
        ).astype(np.int64)
    return out
