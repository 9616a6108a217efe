"""Which (user, creator) pairs have a ``user_creator`` row: so a for-you read asks the online
store only for those.

A first page's ~500 candidates come from a few hundred creators, of which the user has a
history with a few dozen (40 on average in the 100k bench world); every other pair's ``HMGET``
answers nothing and the row gets the defaults. ``user_creator`` is a batch view, loaded only
by materialization from the batch build's parquet file (a full rebuild from the event log,
:mod:`features.refresh`), so that file says which pairs the store can have. The index is
reloaded when a materialization changes the mark and never forgets a pair it saw (a pair
written by an earlier build stays online): it is a superset of the store's rows, so skipping
the pairs outside it changes no feature value.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
SHIFT = np.int64(1 << 32)  # key = user_id * 2^32 + creator_id, for ids in [0, 2^32)


class PairIndex:
    """``has(user_id, creator_ids)``: the candidates whose pair may have a row. Until a load
    succeeds (or for ids outside the key's range) every pair may."""

    def __init__(self) -> None:
        self.keys: np.ndarray | None = None  # sorted unique pair keys
        self.mark: object = None

    def load(self, path: Path, mark: object) -> None:
        """Add the pairs of the parquet file at ``path`` (a materialization's source)."""
        table = pq.read_table(path, columns=["user_id", "creator_id"])
        users = table.column("user_id").to_numpy().astype(np.int64)
        creators = table.column("creator_id").to_numpy().astype(np.int64)
        inside = (users >= 0) & (users < SHIFT) & (creators >= 0) & (creators < SHIFT)
        keys = np.unique(users[inside] * SHIFT + creators[inside])
        self.keys = keys if self.keys is None else np.union1d(self.keys, keys)
        self.mark = mark

    def has(self, user_id: int, creator_ids: np.ndarray) -> np.ndarray:
        """Mask of ``creator_ids`` whose pair with ``user_id`` may have a row."""
        creators = np.asarray(creator_ids, np.int64)
        if self.keys is None or not 0 <= user_id < SHIFT:
            return np.ones(len(creators), bool)
        inside = (creators >= 0) & (creators < SHIFT)
        keys = np.int64(user_id) * SHIFT + np.where(inside, creators, 0)
        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        found = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), bool)
        return found | ~inside
