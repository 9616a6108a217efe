"""Model inputs as arrays: item features, user features and the encoded training timelines.

Everything is indexed by a fixed id order (``IdSpace.item_ids`` / ``user_ids``) so baselines get
sparse matrices and the two-tower gets tensors from the same arrays. The transforms are
stateless (tags hashed with CRC32, fixed log scales) or stored (:class:`UserFeaturizer`), so a
video uploaded after training gets the same features the model was trained on.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from core.clock import DAY_MS
from models.two_tower import GAP_BUCKETS, ItemInputs, UserInputs

MAX_TAGS = 8
RECENT_DAYS = 1.0  # window of the "trending" item feature
NUMERIC = ("log_duration", "log_age", "log_recent_positives")


def tag_hash(tag: str) -> int:
    """A stable id for a tag string (Python's ``hash`` changes between processes)."""
    return zlib.crc32(tag.encode())


@dataclass
class ItemTable:
    """Per-item tower inputs, row i describing ``item_id[i]``."""

    item_id: np.ndarray  # int64 [N]
    author_id: np.ndarray  # int64 [N], -1 unknown
    tags: np.ndarray  # int64 [N, MAX_TAGS], -1 padding
    numeric: np.ndarray  # float32 [N, len(NUMERIC)], scaled
    content: np.ndarray | None = None  # float32 [N, D]

    def __len__(self) -> int:
        return len(self.item_id)

    def inputs(self, rows: np.ndarray | slice) -> ItemInputs:
        content = None if self.content is None else torch.from_numpy(
            np.ascontiguousarray(self.content[rows], dtype=np.float32))
        return ItemInputs(
            item_id=torch.from_numpy(self.item_id[rows]),
            author_id=torch.from_numpy(self.author_id[rows]),
            tags=torch.from_numpy(self.tags[rows]),
            numeric=torch.from_numpy(self.numeric[rows]),
            content=content,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.content is not None:
            out["content"] = self.content.astype(np.float16)  # halves the artifact; ample here
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ItemTable:
        content = arrays.get("content")
        return cls(
            item_id=arrays["item_id"], author_id=arrays["author_id"], tags=arrays["tags"],
            numeric=arrays["numeric"],
            content=None if content is None else content.astype(np.float32),
        )


def item_table(
    items: pd.DataFrame, now: pd.Timestamp | None, content: np.ndarray | None = None,
    recent: np.ndarray | None = None,
) -> ItemTable:
    """Features of ``items`` (rows in order). Age is counted at ``now`` (the training cut, or
    the index build time in serving); without a clock it is left at 0. ``recent``: positives
    per item in the RECENT_DAYS before ``now`` (0 for a fresh upload)."""
    n = len(items)
    author = items["author_id"] if "author_id" in items else pd.Series([None] * n)
    tags = np.full((n, MAX_TAGS), -1, np.int64)
    tag_col = items["tags"] if "tags" in items else pd.Series([None] * n)
    cat_col = items["category"] if "category" in items else pd.Series([None] * n)
    for i, (ts, cat) in enumerate(zip(tag_col, cat_col, strict=True)):
        names = [f"cat:{cat}"] if isinstance(cat, str) else []
        names += [str(t) for t in (ts if ts is not None else [])]
        hashed = [tag_hash(t) for t in dict.fromkeys(names)][:MAX_TAGS]
        tags[i, : len(hashed)] = hashed
    numeric = np.zeros((n, len(NUMERIC)), np.float32)
    if "duration_ms" in items:
        dur = pd.to_numeric(items["duration_ms"], errors="coerce").to_numpy(np.float64)
        numeric[:, 0] = np.nan_to_num((np.log1p(np.clip(dur, 0, None) / 1000) - 3.0) / 1.0)
    if now is not None and "upload_ts" in items:
        up = pd.to_datetime(items["upload_ts"], utc=True)
        age = ((now - up).dt.total_seconds() / 86400).to_numpy(np.float64)
        numeric[:, 1] = np.nan_to_num((np.log1p(np.clip(age, 0, None)) - 2.0) / 1.5)
    if recent is not None:
        numeric[:, 2] = np.log1p(recent) / 3.0
    if content is not None and len(content) != n:
        raise ValueError(f"content has {len(content)} rows for {n} items")
    return ItemTable(
        item_id=items["item_id"].to_numpy(np.int64),
        author_id=pd.to_numeric(author, errors="coerce").fillna(-1).to_numpy(np.int64),
        tags=tags,
        numeric=numeric,
        content=content,
    )


@dataclass
class UserFeaturizer:
    """Dense user features: signed-log numeric columns standardised with training statistics,
    one-hot low-cardinality string columns. Ground truth (``latent_*``) is never a feature."""

    numeric: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.categories.values())

    @classmethod
    def fit(cls, users: pd.DataFrame, max_categories: int = 32) -> UserFeaturizer:
        out = cls()
        for col in users.columns:
            s = users[col]
            if col == "user_id" or col.startswith("latent_"):
                continue
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                x = _signed_log(s)
                out.numeric.append(col)
                out.mean.append(float(np.nanmean(x)) if np.isfinite(x).any() else 0.0)
                out.std.append(float(np.nanstd(x)) or 1.0 if np.isfinite(x).any() else 1.0)
            elif s.dtype == object or isinstance(s.dtype, pd.StringDtype):
                values = s.dropna()
                if len(values) and values.map(type).eq(str).all():
                    top = values.value_counts().index[:max_categories]
                    if len(top) <= max_categories:
                        out.categories[col] = sorted(map(str, top))
        return out

    def transform(self, users: pd.DataFrame) -> np.ndarray:
        cols = []
        for col, m, s in zip(self.numeric, self.mean, self.std, strict=True):
            x = _signed_log(users[col]) if col in users else np.full(len(users), np.nan)
            cols.append(np.nan_to_num((x - m) / s))
        for col, values in self.categories.items():
            s = users[col].astype(object) if col in users else pd.Series([None] * len(users))
            cols += [(s == v).to_numpy(np.float64) for v in values]
        if not cols:
            return np.zeros((len(users), 0), np.float32)
        return np.stack(cols, axis=1).astype(np.float32)


def _signed_log(s: pd.Series) -> np.ndarray:
    x = pd.to_numeric(s, errors="coerce").astype(np.float64).to_numpy()
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class IdSpace:
    """A data set's users and items in a fixed (sorted) order and their per-id features, shared
    by every fold and model; row i of every per-id array describes the i-th id."""

    user_ids: np.ndarray  # sorted int64
    item_ids: np.ndarray  # sorted int64
    items: pd.DataFrame  # aligned with item_ids
    content: np.ndarray | None
    user_features: np.ndarray | None
    featurizer: UserFeaturizer

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        return _lookup(self.item_ids, ids)

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return _lookup(self.user_ids, ids)


def _lookup(space: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in the sorted ``space``; -1 for ids not in it."""
    ids = np.asarray(ids, np.int64)
    pos = np.searchsorted(space, ids).clip(max=max(len(space) - 1, 0))
    found = len(space) > 0 and space[pos] == ids
    return np.where(found, pos, -1)


def build_id_space(
    items: pd.DataFrame, users: pd.DataFrame, rows: pd.DataFrame, content: np.ndarray | None
) -> IdSpace:
    """Every item in the items table or the timelines (rows without metadata get nulls), every
    user in the users table or the timelines. ``content`` is aligned with ``items``."""
    item_ids = np.union1d(items["item_id"].to_numpy(np.int64), rows["item_id"].to_numpy(np.int64))
    meta = items.drop_duplicates("item_id").set_index("item_id")
    aligned = meta.reindex(item_ids).reset_index(names="item_id")
    if content is not None:
        index = pd.Index(items["item_id"].to_numpy(np.int64))
        pos = index.get_indexer(item_ids)
        content = np.where((pos >= 0)[:, None], content[pos.clip(min=0)], 0).astype(np.float32)
    user_ids = np.union1d(users["user_id"].to_numpy(np.int64), rows["user_id"].to_numpy(np.int64))
    featurizer = UserFeaturizer.fit(users)
    feats = None
    if featurizer.dim:
        u = users.drop_duplicates("user_id").set_index("user_id").reindex(user_ids)
        feats = featurizer.transform(u.reset_index())
    return IdSpace(user_ids, item_ids, aligned, content, feats, featurizer)


@dataclass
class TrainData:
    """One fold's training timelines as positions in the id space, CSR by user."""

    ids: IdSpace
    items: ItemTable  # features at ``now``
    indptr: np.ndarray  # [n_users + 1]
    item: np.ndarray  # item index per timeline row, oldest first within a user
    long: np.ndarray
    liked: np.ndarray
    positive: np.ndarray
    ts: np.ndarray  # ms, NaN when untimed
    now: pd.Timestamp | None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # per-fold derived arrays

    @property
    def n_users(self) -> int:
        return len(self.ids.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.ids.item_ids)

    def matrix(self, positive_only: bool = False) -> sp.csr_matrix:
        """Binary user x item matrix of the training timelines."""
        keep = self.positive if positive_only else np.ones(len(self.item), bool)
        rows = np.repeat(np.arange(self.n_users), np.diff(self.indptr))[keep]
        data = np.ones(len(rows), np.float32)
        return sp.csr_matrix((data, (rows, self.item[keep])), shape=(self.n_users, self.n_items))

    def item_counts(self, positive_only: bool = True) -> np.ndarray:
        keep = self.positive if positive_only else slice(None)
        return np.bincount(self.item[keep], minlength=self.n_items)

    def user_inputs(self, users: np.ndarray, history_len: int) -> UserInputs:
        """Each user's last ``history_len`` timeline items (the whole training history);
        time gaps are counted to ``now`` (the cut), or to the last timed item without one."""
        ends = self.indptr[users + 1]
        query = np.full(len(users), self.now.value / 1e6 if self.now is not None else np.nan)
        return self.context(users, ends, history_len, query)

    def context(self, users: np.ndarray, ends: np.ndarray, history_len: int,
                query_ts: np.ndarray | None = None) -> UserInputs:
        """The timeline items before position ``ends`` (exclusive), right-aligned; gaps to
        ``query_ts`` (ms; default: the timestamp at ``ends``, i.e. the training target's)."""
        starts = np.maximum(self.indptr[users], ends - history_len)
        offsets = ends[:, None] - history_len + np.arange(history_len)[None, :]
        valid = offsets >= starts[:, None]
        offsets = np.where(valid, offsets, 0)
        if "padded" not in self.cache:  # one extra row so an empty timeline indexes safely
            pad = np.zeros(1, bool)
            self.cache["padded"] = (
                np.concatenate([self.item, [0]]),
                np.concatenate([self.long, pad]),
                np.concatenate([self.liked, pad]),
            )
        item, long, liked = (a[offsets] for a in self.cache["padded"])
        ts = np.concatenate([self.ts, [np.nan]])
        if query_ts is None:
            query_ts = ts[np.minimum(ends, len(self.ts))]
        hist_ts = np.where(valid, ts[offsets], np.nan)
        last = np.max(np.where(np.isnan(hist_ts), -np.inf, hist_ts), axis=1, initial=-np.inf)
        last[np.isinf(last)] = np.nan  # no timed history either: gaps unknown
        query_ts = np.where(np.isnan(query_ts), last, query_ts)
        raw = np.where(valid, self.ids.item_ids[item], -1)
        long, liked = valid & long, valid & liked
        feats = self.ids.user_features
        return UserInputs(
            user_id=torch.from_numpy(self.ids.user_ids[users]),
            history=torch.from_numpy(raw),
            long=torch.from_numpy(long),
            liked=torch.from_numpy(liked),
            features=None if feats is None else torch.from_numpy(feats[users]),
            gap=torch.from_numpy(gap_buckets(hist_ts, query_ts)),
        )


def gap_buckets(hist_ts: np.ndarray, query_ts: np.ndarray) -> np.ndarray:
    """1 + floor(log2(1 + hours)) from each history time to its row's query time, capped;
    0 where either time is unknown."""
    hours = np.clip((query_ts[:, None] - hist_ts) / 3.6e6, 0, None)
    known = np.isfinite(hours)
    bucket = 1 + np.floor(np.log2(1 + np.where(known, hours, 0)))
    return np.where(known, np.minimum(bucket, GAP_BUCKETS - 1), 0).astype(np.int64)


def encode(ids: IdSpace, rows: pd.DataFrame, now: pd.Timestamp | None) -> TrainData:
    """A fold's training rows (sorted by user, order) as positions in ``ids``."""
    users = ids.user_index(rows["user_id"].to_numpy())
    items = ids.item_index(rows["item_id"].to_numpy())
    if (users < 0).any() or (items < 0).any():
        raise ValueError("training rows reference ids outside the id space")
    order = np.lexsort((rows["order"].to_numpy(), users))
    counts = np.bincount(users, minlength=len(ids.user_ids))
    recent = None
    if now is not None:
        ts = rows["ts"].to_numpy(np.float64)
        window = rows["positive"].to_numpy(bool) & (ts >= now.value / 1e6 - RECENT_DAYS * DAY_MS)
        recent = np.bincount(items[window], minlength=len(ids.item_ids))
    return TrainData(
        ids=ids,
        items=item_table(ids.items, now, ids.content, recent),
        indptr=np.concatenate([[0], np.cumsum(counts)]),
        item=items[order],
        long=rows["long"].to_numpy(bool)[order],
        liked=rows["liked"].to_numpy(bool)[order],
        positive=rows["positive"].to_numpy(bool)[order],
        ts=rows["ts"].to_numpy(np.float64)[order],
        now=now,
    )
