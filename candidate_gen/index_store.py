"""FAISS indexes stored next to the retrieval model version they were built from.

The index goes into the artifacts of the MLflow run that produced the version (under
``faiss/v<version>``) and the version gets a ``faiss_index`` tag pointing at it, so serving finds
the index that matches the model alias it loads. A local copy under ``<var>/indexes`` saves the
download on the machine that built it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from candidate_gen.faiss_index import IndexSpec, ItemIndex, exact_search, latency, recall_at_k
from training import registry
from training.retrieval.bundle import Bundle

TAG = "faiss_index"


@dataclass
class BuildReport:
    index: ItemIndex
    path: Path
    artifact_uri: str
    recall: float  # recall@100 of the index vs exact search, on real user queries
    build_seconds: float
    timings: dict[str, float]


def _local_dir(cache_dir: Path, name: str, version: str) -> Path:
    return cache_dir / name / str(version)  # MLflow 3 versions are ints


def query_sample(bundle: Bundle, n: int = 1000, seed: int = 0) -> np.ndarray:
    """User-tower vectors of up to ``n`` training users: what the index will be asked."""
    users = bundle.data.ids.user_ids[np.diff(bundle.data.indptr) > 0]
    rng = np.random.default_rng(seed)
    picked = rng.choice(users, min(n, len(users)), replace=False) if len(users) else users
    return bundle.user_vectors(picked).numpy()


def build_for_model(uri: str, cache_dir: Path, kind: str = "auto",
                    exclude: np.ndarray | None = None, target_recall: float = 0.95) -> BuildReport:
    """Build, measure and persist the index of a registered retrieval version (a local copy
    under ``cache_dir``, the settings' ``indexes`` directory)."""
    bundle, version = registry.load_bundle(uri, Bundle)
    ids, vectors = bundle.item_ids, bundle.item_vectors
    if exclude is not None and len(exclude):
        keep = ~np.isin(ids, exclude)
        ids, vectors = ids[keep], vectors[keep]
    spec = IndexSpec.for_size(len(ids), vectors.shape[1], kind)
    queries = query_sample(bundle)
    started = time.perf_counter()
    index = ItemIndex.build(ids, vectors, spec, queries=queries, target_recall=target_recall)
    build_seconds = time.perf_counter() - started
    k = min(100, len(ids))
    recall = recall_at_k(index.search(queries, k)[1], exact_search(vectors, ids, queries, k))
    timings = latency(index, queries, k)

    path = index.save(_local_dir(cache_dir, version.name, version.version))
    artifact_path = f"faiss/v{version.version}"
    run_id = version.run_id
    MlflowClient().log_artifacts(run_id, str(path), artifact_path)
    artifact_uri = f"runs:/{run_id}/{artifact_path}"
    MlflowClient().set_model_version_tag(version.name, version.version, TAG, artifact_uri)
    return BuildReport(index, path, artifact_uri, recall, build_seconds, timings)


def load_for_model(uri: str, cache_dir: Path) -> ItemIndex:
    """The index built for the version behind ``uri`` (alias or number), cached locally
    under ``cache_dir``."""
    version = registry.resolve(uri)
    local = _local_dir(cache_dir, version.name, version.version)
    if (local / "index.faiss").is_file():
        return ItemIndex.load(local)
    artifact = version.tags.get(TAG)
    if not artifact:
        raise registry.ModelNotFound(
            f"{uri}: version {version.version} has no FAISS index; run `reelrank index build`")
    with tempfile.TemporaryDirectory() as tmp:
        got = Path(mlflow.artifacts.download_artifacts(artifact, dst_path=tmp))
        shutil.copytree(got, local, dirs_exist_ok=True)
    return ItemIndex.load(local)
