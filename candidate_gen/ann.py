"""Two-tower ANN retrieval for serving: a registered retrieval version, its FAISS index, and
the catalog changes since the index was built.

:meth:`AnnRetriever.sync` keeps the index in step with the catalog: a video that became ready
since the build (``video.processed``) is added, a video removed, failed or made private is
taken out. A new upload's vector is, in order of preference: the one the embed worker stored
for this very version (:mod:`candidate_gen.fresh_items`); this version's item tower run on
the content the worker stored (title, description, hashtags and poster through the offline
encoders); or, for data-set videos and uploads the worker has not served within
``wait_ms`` of their ``ready``, the tower on the title alone (the encoder is then loaded
here). An upload still waiting for its worker vector is left out until the next sync, so the
index never holds the weaker title-only vector of a video about to get a better one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter

from candidate_gen.catalog import PRIVATE, Snapshot
from candidate_gen.faiss_index import ItemIndex
from candidate_gen.fresh_items import (
    Stored,
    expected_image_encoder,
    items_frame,
    tower_content,
)
from core.clock import now_ms

if TYPE_CHECKING:
    from training.retrieval.bundle import Bundle

StoredLookup = Callable[[np.ndarray], dict[int, Stored]]
FRESH_VECTORS = Counter("reelrank_ann_fresh_vectors",
                        "Fresh videos added to an ANN index, by where the vector came from",
                        ["origin"])

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
    # (sorted user ids, their vectors) of every training user, from precompute_users.
    _known: tuple[np.ndarray, np.ndarray] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ids = np.asarray(self.bundle.item_ids, np.int64)
        self.in_index = np.zeros(int(ids.max()) + 1 if len(ids) else 0, bool)
        self.in_index[ids[ids >= 0]] = True
        cat = self.bundle.data.ids
        self._history = (cat.user_ids, self.bundle.data.indptr, cat.item_ids[self.bundle.data.item])

    def precompute_users(self, batch: int = 4096) -> int:
        """Every training user's vector, in batches (at load, off the request path: one
        user's tower on a request costs ~1.5 ms of small tensor ops, a batched row ~5 µs).
        Returns how many; users the model never saw are still computed on first use."""
        users = np.asarray(self.bundle.data.ids.user_ids, np.int64)
        order = np.argsort(users, kind="stable")
        vectors = np.concatenate([
            self.bundle.user_vectors(users[order[i : i + batch]]).numpy()
            for i in range(0, len(users), batch)
        ]) if len(users) else np.zeros((0, 0), np.float32)
        self._known = (users[order], vectors)
        return len(users)

    def user_vector(self, user_id: int) -> np.ndarray:
        """The user tower's output. Its inputs (the user's training history and features)
        are fixed for a model version, so each user's vector is computed once per version."""
        if self._known is not None:
            users, vectors = self._known
            pos = int(np.searchsorted(users, user_id))
            if pos < len(users) and users[pos] == user_id:
                return vectors[pos : pos + 1]
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

    def sync(self, snap: Snapshot, fresh_since_ms: int, stored: StoredLookup | None = None,
             wait_ms: int = 0) -> tuple[int, int]:
        """Add ready, non-private videos uploaded since ``fresh_since_ms`` that the index
        lacks; remove indexed videos that are gone or private. Returns (added, removed).
        ``stored`` reads what the embed worker stored for uploads (see the module docstring).
        Vectors are computed outside the lock, so searches never wait for the encoder."""
        cap = max(snap.capacity, len(self.in_index))
        ok = np.zeros(cap, bool)
        ok[: snap.capacity] = (snap.owner >= 0) & snap.ready & (snap.visibility != PRIVATE)
        have = np.zeros(cap, bool)
        have[: len(self.in_index)] = self.in_index
        gone = np.flatnonzero(have & ~ok)
        new = np.flatnonzero(ok & ~have)
        new = new[snap.created_ms[new] >= fresh_since_ms]
        vectors = None
        if len(new):
            new, vectors = self._new_vectors(snap, new, stored, wait_ms)
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

    def _new_vectors(self, snap: Snapshot, ids: np.ndarray, stored: StoredLookup | None,
                     wait_ms: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids to add now, their vectors); uploads still within ``wait_ms`` of ready without
        anything stored are left for a later sync."""
        found = stored(ids) if stored is not None else {}
        dim, cdim = self.index_dim, self.bundle.model.cfg.content_dim
        image_encoder = expected_image_encoder(self.bundle.meta, cdim)
        out = np.zeros((len(ids), dim), np.float32)
        keep = np.ones(len(ids), bool)
        tower, content, titles = [], [], []
        now = now_ms()
        for row, vid in enumerate(ids.tolist()):
            st = found.get(vid)
            if (st is not None and st.vector is not None and st.vector_model == self.version
                    and st.vector.shape == (dim,)):
                out[row] = st.vector
            elif st is not None and st.content is not None and cdim:
                tower.append(row)
                content.append(tower_content(st.content, st.encoder, cdim, image_encoder))
            elif st is not None and (st.ready_ms is None or now - st.ready_ms < wait_ms):
                keep[row] = False  # the embed worker has not stored it yet: next sync
            else:
                titles.append(row)
        if tower:
            out[tower] = self._vectors(snap, ids[tower], np.stack(content))
        if titles:
            out[titles] = self._vectors(snap, ids[titles])
        FRESH_VECTORS.labels("stored").inc(len(ids) - len(tower) - len(titles) - int((~keep).sum()))
        FRESH_VECTORS.labels("stored_content").inc(len(tower))
        FRESH_VECTORS.labels("title_only").inc(len(titles))
        return ids[keep], (out[keep] if keep.any() else None)

    @property
    def index_dim(self) -> int:
        return int(self.bundle.item_vectors.shape[1])

    def _vectors(self, snap: Snapshot, ids: np.ndarray,
                 content: np.ndarray | None = None) -> np.ndarray:
        """The item tower on the catalog's metadata and ``content`` (default: the title)."""
        titles = [snap.titles[i] or "" for i in ids]
        topics = [snap.topics[t] if t >= 0 else None for t in snap.topic[ids]]
        items = items_frame(ids, snap.owner[ids], titles, snap.duration_ms[ids],
                            snap.created_ms[ids], topics)
        dim = self.bundle.model.cfg.content_dim
        if content is None and dim:
            content = content_vectors(titles, dim)
        return self.bundle.vectors_for_items(items, content if dim else None)


def load_retriever(model_uri: str, index_dir: Path) -> AnnRetriever:
    """The retrieval version behind ``model_uri`` with its FAISS index (built by
    ``reelrank index build``, cached under ``index_dir``); raises when either is missing."""
    from candidate_gen.index_store import load_for_model
    from training import registry
    from training.retrieval.bundle import Bundle

    bundle, version = registry.load_bundle(model_uri, Bundle)
    index = load_for_model(f"models:/{version.name}/{version.version}", index_dir)
    retriever = AnnRetriever(bundle, index, f"{version.name}/{version.version}")
    retriever.precompute_users()
    return retriever
