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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd


def _keys(values: pd.Series) -> pd.Index:
    """Comparable vocabulary keys: integers stay integers (missing -> -1), the rest strings."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return pd.Index(pd.to_numeric(values).fillna(-1).to_numpy().astype(np.int64))
    return pd.Index(values.astype("string").fillna("").to_numpy(str))


def _values(v: Any) -> tuple[pd.Series | None, pd.Series | None]:
    """``(values, None)`` for a column, ``(None, one-element series)`` for a scalar."""
    if np.ndim(v) == 0:
        return None, pd.Series([v])
    return (v if isinstance(v, pd.Series) else pd.Series(np.asarray(v))), None


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

    def __post_init__(self) -> None:
        self._index = {c: pd.Index(v) for c, v in self.vocab.items()}

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical: list[str],
        numeric: list[str],
        min_count: int = 2,
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
        return cls(list(categorical), list(numeric), vocab, log, mean, std, lo, hi)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(self.vocab[c]) + 1 for c in self.categorical)

    def encode(
        self, columns: pd.DataFrame | Mapping[str, Any], n: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(categorical int64 [n, F], numeric float32 [n, D])`` from a frame, or from a
        mapping of column -> values (length ``n``) or scalar (the same for every row).
        Absent columns are unknown (index 0 / the training mean)."""
        n = len(columns) if n is None else n
        cat = np.zeros((n, len(self.categorical)), np.int64)
        for j, c in enumerate(self.categorical):
            if c in columns:
                values, scalar = _values(columns[c])
                cat[:, j] = self._index[c].get_indexer(_keys(values)) + 1 if scalar is None else (
                    self._index[c].get_indexer(_keys(scalar))[0] + 1)
        num = np.zeros((n, len(self.numeric)), np.float32)
        for j, c in enumerate(self.numeric):
            if c in columns:
                values, scalar = _values(columns[c])
                x = pd.to_numeric(values if scalar is None else scalar, errors="coerce")
                x = np.asarray(x, np.float64)
                if self.log[c]:
                    x = np.log1p(np.maximum(x, 0.0))
                z = np.clip((x - self.mean[c]) / self.std[c], self.lo[c], self.hi[c])
                num[:, j] = np.nan_to_num(z, nan=0.0)
        return cat, num

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Featurizer:
        return cls(**d)
