"""Two-tower ANN retrieval for serving: a registered retrieval version, its FAISS index, and
the catalog changes since the index was built.

:meth:`AnnRetriever.sync` keeps the index in step with the catalog: a video that became ready
since the build (``video.processed``) gets its item-tower vector from its title, topic and
metadata (the content tower reads the title through the same offline text encoder training
used) and is added; a video removed, failed or made private is taken out. So a new upload is
searchable within one catalog refresh, and never in a stale index after a deletion.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from candidate_gen.catalog import PRIVATE, Snapshot
from candidate_gen.faiss_index import ItemIndex

if TYPE_CHECKING:
    from training.retrieval.bundle import Bundle

log = logging.getLogger(__name__)
USER_CACHE = 200_000  # user vectors kept (64 floats each: ~60 MB at most)
_encoder_lock = threading.Lock()
_encoder: list = []  # the text encoder, loaded on the first new video (it takes seconds)


def _text_encoder():  # noqa: ANN202 - sentence_transformers type, imported lazily
    with _encoder_lock:
        if not _encoder:
            from training.content import load_text_encoder

            _encoder.append(load_text_encoder())
        return _encoder[0]


def content_vectors(titles: list[str], dim: int) -> np.ndarray:
    """Title embeddings padded (or cut) to the model's content width; zeros without a title."""
    from training.content import TEXT_DIM

    out = np.zeros((len(titles), dim), np.float32)
    present = [i for i, t in enumerate(titles) if t]
    if dim and present:
        emb = _text_encoder().encode([titles[i] for i in present], normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        out[present, : min(dim, TEXT_DIM)] = emb[:, : min(dim, TEXT_DIM)]
    return out


@dataclass
class AnnRetriever:
    """``search(user_id, k)`` over the index of one retrieval model version."""

    bundle: Bundle
    index: ItemIndex
    version: str  # "reelrank-retrieval/3"
    in_index: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # by video id
    _vectors_cache: dict[int, np.ndarray] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ids = np.asarray(self.bundle.item_ids, np.int64)
        self.in_index = np.zeros(int(ids.max()) + 1 if len(ids) else 0, bool)
        self.in_index[ids[ids >= 0]] = True
        cat = self.bundle.data.ids
        self._history = (cat.user_ids, self.bundle.data.indptr, cat.item_ids[self.bundle.data.item])

    def user_vector(self, user_id: int) -> np.ndarray:
        """The user tower's output. Its inputs (the user's training history and features)
        are fixed for a model version, so each user's vector is computed once per version."""
        got = self._vectors_cache.get(user_id)
        if got is None:
            got = self.bundle.user_vectors(np.array([user_id], np.int64)).numpy()
            if len(self._vectors_cache) >= USER_CACHE:
                self._vectors_cache.clear()
            self._vectors_cache[user_id] = got
        return got

    def history(self, user_id: int) -> np.ndarray:
        """Items the user interacted with in the model's training data (already seen)."""
        users, indptr, items = self._history
        pos = np.searchsorted(users, user_id)
        if pos >= len(users) or users[pos] != user_id:
            return np.zeros(0, np.int64)
        return items[indptr[pos] : indptr[pos + 1]]

    def search(self, user_id: int, k: int, exclude_history: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (ids, scores) for the user, without their training history unless
        ``exclude_history`` is off (a caller that filters it with the rest of what is seen)."""
        seen = self.history(user_id) if exclude_history else np.zeros(0, np.int64)
        query = self.user_vector(user_id)
        with self._lock:  # FAISS reads must not overlap an add / remove
            scores, ids = self.index.search(query, k + min(len(seen), k))
        ids, scores = ids[0], scores[0]
        keep = (ids >= 0) & ~np.isin(ids, seen)
        return ids[keep][:k], scores[keep][:k]

    def sync(self, snap: Snapshot, fresh_since_ms: int) -> tuple[int, int]:
        """Add ready, non-private videos uploaded since ``fresh_since_ms`` that the index
        lacks; remove indexed videos that are gone or private. Returns (added, removed).
        Vectors are computed outside the lock, so searches never wait for the encoder."""
        cap = max(snap.capacity, len(self.in_index))
        ok = np.zeros(cap, bool)
        ok[: snap.capacity] = (snap.owner >= 0) & snap.ready & (snap.visibility != PRIVATE)
        have = np.zeros(cap, bool)
        have[: len(self.in_index)] = self.in_index
        gone = np.flatnonzero(have & ~ok)
        new = np.flatnonzero(ok & ~have)
        new = new[snap.created_ms[new] >= fresh_since_ms]
        vectors = self._vectors(snap, new) if len(new) else None
        with self._lock:
            if len(self.in_index) < cap:
                self.in_index = np.concatenate([self.in_index,
                                                np.zeros(cap - len(self.in_index), bool)])
            if len(gone):
                self.index.remove(gone)
                self.in_index[gone] = False
            if vectors is not None:
                self.index.add(new, vectors)
                self.in_index[new] = True
        return len(new), len(gone)

    def _vectors(self, snap: Snapshot, ids: np.ndarray) -> np.ndarray:
        titles = [snap.titles[i] or "" for i in ids]
        topics = [snap.topics[t] if t >= 0 else None for t in snap.topic[ids]]
        items = pd.DataFrame({
            "item_id": ids, "author_id": snap.owner[ids], "title": titles,
            "duration_ms": np.where(snap.duration_ms[ids] >= 0, snap.duration_ms[ids], np.nan),
            "upload_ts": pd.to_datetime(snap.created_ms[ids], unit="ms", utc=True),
            "category": topics, "tags": [[t] if t else [] for t in topics],
        })
        dim = self.bundle.model.cfg.content_dim
        content = content_vectors(titles, dim) if dim else None
        return self.bundle.vectors_for_items(items, content)


def load_retriever(model_uri: str, index_dir: Path) -> AnnRetriever:
    """The retrieval version behind ``model_uri`` with its FAISS index (built by
    ``reelrank index build``, cached under ``index_dir``); raises when either is missing."""
    from candidate_gen.index_store import load_for_model
    from training import registry
    from training.retrieval.bundle import Bundle

    bundle, version = registry.load_bundle(model_uri, Bundle)
    index = load_for_model(f"models:/{version.name}/{version.version}", index_dir)
    return AnnRetriever(bundle, index, f"{version.name}/{version.version}")
