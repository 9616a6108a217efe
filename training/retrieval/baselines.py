"""Baselines, fitted and scored exactly like the two-tower (same folds, same evaluation).

Each is also a candidate source: ``fit`` on a fold's timelines, then ``score`` users against
the whole catalog. Hyper-parameters are tuned on the validation fold by the same loop as the
two-tower's (see :mod:`training.retrieval.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from core.clock import DAY_MS
from training.retrieval.data import Fold
from training.retrieval.inputs import TrainData


def _gram(data: TrainData) -> np.ndarray:
    """Dense item co-occurrence counts X^T X (float32), computed once per fold and shared."""
    if "gram" not in data.cache:
        x = data.matrix().tocsc()
        gram = np.zeros((data.n_items, data.n_items), np.float32)
        for s in range(0, data.n_items, 2048):
            gram[:, s : s + 2048] = (x.T @ x[:, s : s + 2048]).toarray()
        data.cache["gram"] = gram
    return data.cache["gram"]


@dataclass
class Popularity:
    """Most positives within the last ``window_days`` before the cut (all time when None or
    when the data has no clock); all-time counts break ties."""

    window_days: float | None = None
    name: str = "popularity"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        total = data.item_counts().astype(np.float64)
        recent = total
        if self.window_days is not None and data.now is not None:
            since = data.now.value / 1e6 - self.window_days * DAY_MS
            keep = data.positive & (data.ts >= since)
            recent = np.bincount(data.item[keep], minlength=data.n_items).astype(np.float64)
        self.scores = (recent + total / (total.max() + 1.0)).astype(np.float32)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(users), len(self.scores)))


@dataclass
class ItemKNN:
    """Item-item cosine over co-occurrence (shrunk), ``neighbors`` kept per item; a user's
    score for an item sums its similarity to the items they consumed."""

    neighbors: int = 200
    shrink: float = 10.0
    name: str = "itemknn"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        gram = _gram(data)
        norms = np.sqrt(np.diag(gram)).astype(np.float32)
        self.x = data.matrix()
        k = min(self.neighbors, data.n_items - 1)
        rows, cols, vals = [], [], []
        for s in range(0, data.n_items, 2048):
            block = gram[:, s : s + 2048] / (norms[:, None] * norms[None, s : s + 2048]
                                             + self.shrink + 1e-9)
            block[np.arange(s, s + block.shape[1]), np.arange(block.shape[1])] = 0.0
            top = np.argpartition(-block, k, axis=0)[:k]  # neighbours of each column item
            rows.append(top.ravel())
            cols.append(np.repeat(np.arange(s, s + block.shape[1])[None, :], k, 0).ravel())
            vals.append(np.take_along_axis(block, top, 0).ravel())
        self.sim = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(data.n_items, data.n_items),
        )

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.x[users] @ self.sim).toarray()


@dataclass
class EASE:
    """Steck's closed-form linear autoencoder: B = I - P / diag(P), P = (X^T X + l2 I)^-1,
    solved by Cholesky over the items that occur in training (the others score 0)."""

    l2: float = 200.0
    name: str = "ease"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        gram = _gram(data)
        self.active = np.flatnonzero(np.diag(gram) > 0)
        g = gram[np.ix_(self.active, self.active)].astype(np.float32)
        g[np.diag_indices_from(g)] += self.l2
        chol, info = lapack.spotrf(g, lower=0, overwrite_a=1, clean=1)
        if info:
            raise np.linalg.LinAlgError(f"EASE: Cholesky failed ({info})")
        p, info = lapack.spotri(chol, lower=0, overwrite_c=1)
        if info:
            raise np.linalg.LinAlgError(f"EASE: inverse failed ({info})")
        p = np.triu(p) + np.triu(p, 1).T  # spotri fills the upper triangle only
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.b = b
        self.x = data.matrix()[:, self.active].tocsr()
        self.n_items = data.n_items

    def score(self, users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), self.n_items), np.float32)
        out[:, self.active] = self.x[users] @ self.b
        return out


@dataclass
class ALS:
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky) from the ``implicit``
    library: confidence 1 + alpha for consumed items."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 0
    threads: int = 0
    name: str = "als"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        model = AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, random_state=self.seed, num_threads=self.threads,
        )
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS thrashes
            model.fit(data.matrix(), show_progress=False)
        self.users, self.items = model.user_factors, model.item_factors

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.users[users] @ self.items.T


@dataclass
class RandomScores:
    """Uniform random ranking: the floor every model must clear."""

    seed: int = 0
    name: str = "random"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.n_items = data.n_items

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.rng.random((len(users), self.n_items), dtype=np.float32)


@dataclass
class ContentKNN:
    """Items nearest to the user's last ``history_len`` items in the frozen content space (the
    text-encoder embeddings the two-tower's content path reads): ``aggregate`` "mean" ranks by
    cosine to the history's centroid, "max" by the cosine to the nearest history item. Needs
    no interaction with the item itself, so it scores cold items; items without content and
    users without history score 0."""

    history_len: int = 50
    aggregate: str = "mean"
    name: str = "content-knn"

    def fit(self, data: TrainData, valid: Fold | None = None) -> None:
        import torch

        if data.items.content is None:
            raise ValueError("content-knn needs content embeddings (none for this data set)")
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"unknown aggregate {self.aggregate!r} (use mean|max)")
        content = torch.from_numpy(np.ascontiguousarray(data.items.content, np.float32))
        self.content = torch.nn.functional.normalize(content, dim=1)
        self.data = data

    def score(self, users: np.ndarray) -> np.ndarray:
        import torch

        data, h = self.data, self.history_len
        lengths = np.minimum(data.indptr[users + 1] - data.indptr[users], h)
        # Each user's last ``h`` items, packed: histories are short next to ``h`` (MicroLens:
        # ~6 items a user), so padding them to ``h`` would multiply the work by ~h/6.
        items = np.concatenate([data.item[data.indptr[u + 1] - n : data.indptr[u + 1]]
                                for u, n in zip(users, lengths, strict=True)] or [[]])
        vectors = self.content[torch.from_numpy(items.astype(np.int64))]
        if self.aggregate == "mean":
            owner = torch.from_numpy(np.repeat(np.arange(len(users)), lengths))
            centroid = torch.zeros(len(users), vectors.shape[1]).index_add_(0, owner, vectors)
            centroid /= torch.from_numpy(np.maximum(lengths, 1)).float()[:, None]
            return (centroid @ self.content.T).numpy()
        out = np.zeros((len(users), len(self.content)), np.float32)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for s in range(0, len(users), 64):  # [64 users' history rows, n_items] at a time
            rows = slice(starts[s], starts[min(s + 64, len(users))])
            sims = (vectors[rows] @ self.content.T).numpy()
            some = np.flatnonzero(lengths[s : s + 64]) + s  # users without history keep 0
            if len(some):
                out[some] = np.maximum.reduceat(sims, starts[some] - starts[s], axis=0)
        return out
