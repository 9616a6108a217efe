"""The item index: exact below the threshold, IVF above with tuned nprobe; upserts and deletes
change what search returns; persisted indexes search the same after loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from candidate_gen.faiss_index import IndexSpec, ItemIndex, exact_search, recall_at_k


def clustered(n: int, dim: int = 16, clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_spec_by_size() -> None:
    assert IndexSpec.for_size(49_999, 64).kind == "flat"
    big = IndexSpec.for_size(1_000_000, 64)
    assert big.kind == "ivf" and big.nlist == 4096
    with pytest.raises(ValueError):
        IndexSpec.for_size(10, 4, kind="hnsw")


def test_flat_add_remove_and_upsert_change_results(tmp_path: Path) -> None:
    vectors = clustered(500)
    ids = np.arange(1000, 1500)
    index = ItemIndex.build(ids, vectors)
    assert index.spec.kind == "flat" and len(index) == 500
    query = vectors[7:8]
    assert index.search(query, 1)[1][0, 0] == 1007

    index.remove(np.array([1007, 99999]))  # a private video, and an id never indexed
    assert len(index) == 499 and 1007 not in index.search(query, 10)[1]

    index.add(np.array([5]), query * 1.0)  # a fresh upload identical to the query
    assert index.search(query, 1)[1][0, 0] == 5
    index.add(np.array([5]), -query)  # re-embedding replaces, never duplicates
    assert len(index) == 500 and index.search(query, 1)[1][0, 0] != 5

    loaded = ItemIndex.load(index.save(tmp_path / "idx"))
    assert np.array_equal(loaded.search(vectors[:20], 10)[1], index.search(vectors[:20], 10)[1])


def test_ivf_tunes_nprobe_to_the_recall_target_and_supports_removal(tmp_path: Path) -> None:
    vectors = clustered(20_000, seed=1)
    ids = np.arange(20_000)
    queries = clustered(200, seed=2)
    index = ItemIndex.build(ids, vectors, IndexSpec.for_size(20_000, 16, "ivf"), queries=queries,
                            target_recall=0.95)
    assert index.spec.kind == "ivf" and index.spec.recall >= 0.95
    assert 1 <= index.spec.nprobe < index.spec.nlist  # cheaper than scanning every list
    exact = exact_search(vectors, ids, queries, 100)
    assert recall_at_k(index.search(queries, 100)[1], exact) >= 0.95

    top = index.search(queries[:1], 1)[1][0, 0]
    assert index.remove(np.array([top])) == 1
    assert top not in index.search(queries[:1], 100)[1]
    loaded = ItemIndex.load(index.save(tmp_path / "ivf"))
    assert loaded.spec.nprobe == index.spec.nprobe and len(loaded) == 19_999
    assert top not in loaded.search(queries[:1], 100)[1]


def test_recall_at_k_counts_overlap() -> None:
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 4]])) == pytest.approx(1 / 3)
