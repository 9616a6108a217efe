"""From a frame of raw feature columns to the ranker's two input matrices, the same everywhere.

:class:`Featurizer` is fitted once on the training frame and stored with the model, so
training, ``reelrank rank`` and serving encode a row identically:

- categorical columns -> vocabulary indices, 0 for a value unseen (or too rare) in training, so
  a brand-new video or user never raises and shares one learned "unknown" row;
- numeric columns -> ``log1p`` when heavy-tailed and non-negative (counts, durations), then
  standardised with the training mean / std and clipped to the training range; a missing
  value becomes 0 (the mean). The clip matters: windowed counts grow with the log, and a
  network extrapolates a count it never saw linearly (its calibration drifts on the next day)
  where a tree stays flat.
- the watch history (``u_last_watched``: video ids, newest first) -> ``[N, L, F]`` indices of
  each watched video's id, creator and topic in the same vocabularies as the candidate's, so
  the ranker's target attention compares a candidate with what the user watched; the video ->
  creator / topic table comes from the training frame and is stored with the featurizer
  (serving passes only the ids). Padding is -1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.ranker.history import HISTORY_COLUMN, PAD

# A watched video is described by these fields (when categorical): the candidate's own.
ITEM_FIELDS = ("video_id", "v_creator_id", "v_topic_id")


def _keys(values: pd.Series) -> pd.Index:
    """Comparable vocabulary keys: integers stay integers (missing -> -1), the rest strings."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return pd.Index(pd.to_numeric(values).fillna(-1).to_numpy().astype(np.int64))
    return pd.Index(values.astype("string").fillna("").to_numpy(str))


def _floats(v: Any) -> np.ndarray | float:
    """Values as float64 (a scalar stays a scalar); anything non-numeric becomes NaN."""
    try:
        return np.asarray(v, np.float64) if np.ndim(v) else float(v if v is not None else np.nan)
    except (TypeError, ValueError):
        x = pd.to_numeric(pd.Series(np.atleast_1d(np.asarray(v, object))), errors="coerce")
        return x.to_numpy(np.float64) if np.ndim(v) else float(x.iloc[0])


def _history_row(values: Any, length: int) -> np.ndarray:
    """One history list as ``length`` video ids (PAD after its end and for missing ids)."""
    out = np.full(length, PAD, np.int64)
    if values is None or not len(values):
        return out
    row = np.asarray(_floats(list(values)[:length]), np.float64).reshape(-1)
    out[: len(row)] = np.where(np.isnan(row), PAD, row).astype(np.int64)
    return out


def _rows(columns: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


@dataclass
class Featurizer:
    """Column lists, vocabularies and numeric scales learned from the training frame."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    vocab: dict[str, list[Any]] = field(default_factory=dict)
    log: dict[str, bool] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    history_len: int = 0  # 0: no history input
    item_fields: list[str] = field(default_factory=list)  # history item -> these vocabularies
    item_table: dict[str, list[Any]] = field(default_factory=dict)  # video_id sorted, + fields

    def __post_init__(self) -> None:
        # Integer vocabularies (ids) are looked up by binary search; others through an Index.
        self._ints = {c: np.asarray(v, np.int64) for c, v in self.vocab.items()
                      if all(isinstance(x, int) for x in v)}
        self._index = {c: pd.Index(v) for c, v in self.vocab.items() if c not in self._ints}
        self._items = {c: np.asarray(v, np.int64) for c, v in self.item_table.items()}
        cols = self.numeric
        self._log = np.array([self.log[c] for c in cols], bool)
        self._scale = {k: np.array([getattr(self, k)[c] for c in cols], np.float64)
                       for k in ("mean", "std", "lo", "hi")}

    def _lookup(self, column: str, v: Any) -> np.ndarray | int:
        """Vocabulary indices (0 unknown) of values ``v`` (or of one scalar)."""
        if column not in self._ints:
            keys = _keys(pd.Series(np.atleast_1d(np.asarray(v, object))))
            idx = self._index[column].get_indexer(keys) + 1
            return idx if np.ndim(v) else int(idx[0])
        vocab = self._ints[column]
        x = _floats(v)
        keys = np.where(np.isnan(x), -1, x).astype(np.int64)
        pos = np.searchsorted(vocab, keys).clip(max=max(len(vocab) - 1, 0))
        hit = vocab[pos] == keys if len(vocab) else np.zeros(np.shape(keys), bool)
        return np.where(hit, pos + 1, 0)

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical: list[str],
        numeric: list[str],
        min_count: int = 2,
        history_len: int = 0,
    ) -> Featurizer:
        vocab: dict[str, list[Any]] = {}
        for c in categorical:
            counts = _keys(frame[c]).value_counts()
            vocab[c] = sorted(counts.index[counts >= min_count].tolist())
        log, mean, std, lo, hi = {}, {}, {}, {}, {}
        for c in numeric:
            x = pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
            x_min, x_max = x.min(), x.max()
            log[c] = bool(x_min >= 0 and x_max > 10)  # counts and durations: compress the tail
            v = np.log1p(x) if log[c] else x
            mean[c] = float(v.mean()) if v.notna().any() else 0.0
            s = float(v.std()) if v.notna().sum() > 1 else 0.0
            std[c] = s if s > 1e-9 else 1.0
            z = ((v - mean[c]) / std[c]).dropna()
            lo[c], hi[c] = (float(z.min()), float(z.max())) if len(z) else (0.0, 0.0)
        fields: list[str] = []
        table: dict[str, list[Any]] = {}
        if history_len and HISTORY_COLUMN in frame and "video_id" in categorical:
            fields = [c for c in ITEM_FIELDS if c in categorical]
            last = frame[fields].drop_duplicates("video_id", keep="last").sort_values("video_id")
            table = {c: _keys(last[c]).tolist() for c in fields}
        return cls(list(categorical), list(numeric), vocab, log, mean, std, lo, hi,
                   history_len if fields else 0, fields, table)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(self.vocab[c]) + 1 for c in self.categorical)

    def encode(
        self,
        frame: pd.DataFrame | Mapping[str, np.ndarray],
        scalars: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(categorical int64 [N, F], numeric float32 [N, D])`` for the rows of ``frame`` (a
        DataFrame, or columns as equal-length arrays: serving's form); ``scalars`` (one value
        for every row: the user's features, the request context) take precedence over the
        frame's columns. Absent columns are unknown (index 0 / the mean)."""
        scalars = scalars or {}
        n = len(frame) if isinstance(frame, pd.DataFrame) else _rows(frame)
        cat = np.zeros((n, len(self.categorical)), np.int64)
        for j, c in enumerate(self.categorical):
            if c in scalars or c in frame:
                cat[:, j] = self._lookup(c, scalars[c] if c in scalars else frame[c])
        x = np.full((n, len(self.numeric)), np.nan)
        block = [j for j, c in enumerate(self.numeric) if c not in scalars and c in frame]
        try:  # one conversion for all of the frame's numeric columns
            if not isinstance(frame, pd.DataFrame):
                raise TypeError("columns")
            x[:, block] = frame[[self.numeric[j] for j in block]].to_numpy(np.float64,
                                                                           na_value=np.nan)
        except (TypeError, ValueError):
            for j in block:
                x[:, j] = _floats(frame[self.numeric[j]])
        for j, c in enumerate(self.numeric):
            if c in scalars:
                x[:, j] = _floats(scalars[c])
        x[:, self._log] = np.log1p(np.maximum(x[:, self._log], 0.0))
        sc = self._scale
        z = np.clip((x - sc["mean"]) / sc["std"], sc["lo"], sc["hi"])
        return cat, np.nan_to_num(z, nan=0.0).astype(np.float32)

    def encode_history(self, values: Any, n: int) -> np.ndarray:
        """``[n, history_len, len(item_fields)]`` vocabulary indices (-1: padding) of a
        history list column (one list per row) or of one list shared by all ``n`` rows."""
        length = self.history_len
        rows = [] if values is None else list(values)
        if not rows or all(np.ndim(v) == 0 for v in rows[:1]):  # one list for every row
            return np.repeat(self._history_indices(_history_row(rows, length)[None]), n, 0)
        ids = np.full((n, length), PAD, np.int64)
        for i, row in enumerate(rows[:n]):  # a user's list repeated: encoded once
            ids[i] = ids[i - 1] if i and row is rows[i - 1] else _history_row(row, length)
        return self._history_indices(ids)

    def _history_indices(self, ids: np.ndarray) -> np.ndarray:
        """Video ids [N, L] (PAD: padding) -> indices [N, L, fields] of each watched video's
        id, creator and topic in the candidate's vocabularies."""
        n, length = ids.shape
        pad = ids == PAD
        known = self._items.get("video_id", np.empty(0, np.int64))
        pos = np.searchsorted(known, ids).clip(max=max(len(known) - 1, 0))
        hit = (known[pos] == ids) & ~pad if len(known) else np.zeros(ids.shape, bool)
        out = np.empty((n, length, len(self.item_fields)), np.int64)
        for f, c in enumerate(self.item_fields):
            raw = ids if c == "video_id" else np.where(
                hit, self._items[c][pos], -1)
            out[:, :, f] = np.asarray(self._lookup(c, raw.ravel())).reshape(n, length)
        out[pad] = PAD
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Featurizer:
        return cls(**d)
