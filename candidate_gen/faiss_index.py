"""FAISS inner-product index over item-tower vectors, keyed by item id.

Below ~50k items exact search (``IndexFlatIP``) is fast enough and loses nothing. Above it an
IVF index: unlike HNSW it supports removing vectors, which deleted or privated videos need,
and new videos are added without re-training. ``nprobe`` is chosen at build time as the
smallest value whose recall@100 against exact search reaches the target on sample queries.
Both kinds sit behind item ids (``IndexIDMap2`` for flat, IVF's own ids), so ``add`` is an
upsert and ``remove`` takes ids.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

EXACT_MAX_ITEMS = 50_000
TARGET_RECALL = 0.95


@dataclass
class IndexSpec:
    kind: str  # "flat" | "ivf"
    dim: int
    nlist: int = 0
    nprobe: int = 0
    recall: float = 1.0  # recall@k vs exact measured at build time

    @classmethod
    def for_size(cls, n: int, dim: int, kind: str = "auto") -> IndexSpec:
        """``auto``: flat below EXACT_MAX_ITEMS, else IVF with ~4 sqrt(n) lists (a power of
        two, at most n / 8 so every list gets training points); nprobe is tuned at build."""
        if kind == "auto":
            kind = "flat" if n < EXACT_MAX_ITEMS else "ivf"
        if kind == "flat":
            return cls("flat", dim)
        if kind != "ivf":
            raise ValueError(f"unknown index kind {kind!r} (use auto|flat|ivf)")
        nlist = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
        return cls("ivf", dim, nlist=max(1, min(nlist, n // 8)), nprobe=1)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class ItemIndex:
    """Search, upsert and delete item vectors by id."""

    def __init__(self, index: faiss.Index, spec: IndexSpec) -> None:
        self.index, self.spec = index, spec

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec | None = None,
              queries: np.ndarray | None = None, target_recall: float = TARGET_RECALL,
              train_size: int = 100_000, seed: int = 0) -> ItemIndex:
        """An index of ``vectors``; IVF also trains its lists and tunes ``nprobe`` on
        ``queries`` (default: a sample of the vectors themselves)."""
        vectors = _f32(vectors)
        spec = spec or IndexSpec.for_size(len(ids), vectors.shape[1])
        if spec.kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(spec.dim))
        elif spec.kind == "ivf":
            quantizer = faiss.IndexFlatIP(spec.dim)
            index = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(len(vectors), min(train_size, len(vectors)), replace=False)]
            index.cp.seed = seed
            index.train(sample)
        else:
            raise ValueError(f"unknown index kind {spec.kind!r}")
        out = cls(index, spec)
        out.add(ids, vectors)
        if spec.kind == "ivf":
            if queries is None:
                rng = np.random.default_rng(seed + 1)
                queries = vectors[rng.choice(len(vectors), min(500, len(vectors)), replace=False)]
            out.tune_nprobe(ids, vectors, _f32(queries), target_recall)
        return out

    def tune_nprobe(self, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
                    target: float, k: int = 100) -> None:
        exact = exact_search(vectors, ids, queries, k)
        nprobe = 1
        while True:
            self.index.nprobe = nprobe
            self.spec.nprobe, self.spec.recall = nprobe, recall_at_k(self.search(queries, k)[1],
                                                                     exact)
            if self.spec.recall >= target or nprobe >= self.spec.nlist:
                return
            nprobe = min(nprobe * 2, self.spec.nlist)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace: an id already in the index gets its new vector."""
        ids = np.asarray(ids, np.int64)
        self.remove(ids)
        self.index.add_with_ids(_f32(vectors), ids)

    def remove(self, ids: np.ndarray) -> int:
        """Delete ids (deleted / private videos); unknown ids are ignored. How many went."""
        ids = np.asarray(ids, np.int64)
        if not len(ids) or not len(self):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top ``k`` per query; ids are -1 where fewer items exist."""
        return self.index.search(_f32(queries), k)

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "index.faiss"))
        (path / "index.json").write_text(json.dumps(asdict(self.spec), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> ItemIndex:
        spec = IndexSpec(**json.loads((path / "index.json").read_text()))
        index = faiss.read_index(str(path / "index.faiss"))
        if spec.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
        return cls(index, spec)


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray,
                 k: int) -> np.ndarray:
    """Ground-truth ids by brute-force inner product (FAISS flat, no id map)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(_f32(vectors))
    return np.asarray(ids)[flat.search(_f32(queries), k)[1]]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index also returned."""
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact, strict=True)]
    return float(np.sum(hits) / exact.size)


def latency(index: ItemIndex, queries: np.ndarray, k: int = 100,
            batch: int = 1000) -> dict[str, float]:
    """Single-query p50 / p99 latency (ms) and batched throughput (queries/s)."""
    times = []
    for q in queries[:batch]:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    index.search(queries[:batch], k)
    qps = min(batch, len(queries)) / (time.perf_counter() - t)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
            "qps": float(qps)}
