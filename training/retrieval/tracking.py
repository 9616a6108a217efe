"""MLflow for retrieval: experiment setup, the pyfunc model, registration and loading back.

The registered model ``reelrank-retrieval`` is a pyfunc whose input is a frame of ``user_id``
(and a ``k`` parameter) and whose output is each user's top-k; its artifact is the
:class:`~training.retrieval.bundle.Bundle`, which the CLI and the index builder load directly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from training import tracking as shared
from training.retrieval.bundle import Bundle
from training.tracking import ModelNotFound, log_metrics, metric_key, resolve

__all__ = ["ModelNotFound", "log_metrics", "metric_key", "resolve"]  # re-exported (shared)

EXPERIMENT = "reelrank-retrieval"
MODEL_NAME = "reelrank-retrieval"
_PIP = ["torch==2.14.1", "numpy", "pandas", "pyarrow", "mlflow==3.17.2"]


def configure() -> None:
    """Point MLflow at the settings' tracking URI; artifacts go under ``<var>/mlartifacts``."""
    shared.configure(EXPERIMENT)


class RetrievalPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(frame with user_id, params={"k": K})`` -> user_id, item_id, rank, score."""

    def load_context(self, context: Any) -> None:
        self.bundle = Bundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 100))
        return self.bundle.recommend(model_input["user_id"].to_numpy(np.int64), k)


def log_bundle(bundle: Bundle, eval_table: pd.DataFrame) -> str:
    """Log the eval table, the item embeddings and the model into the active run; its URI."""
    if not eval_table.empty:
        mlflow.log_table(eval_table, artifact_file="eval/eval_table.json")
    with tempfile.TemporaryDirectory() as tmp:
        emb = pd.DataFrame({"item_id": bundle.item_ids, "embedding": list(bundle.item_vectors)})
        emb_path = Path(tmp) / "item_embeddings.parquet"
        emb.to_parquet(emb_path)
        mlflow.log_artifact(str(emb_path), artifact_path="embeddings")
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        users = pd.DataFrame({"user_id": bundle.data.catalog.user_ids[:3].astype(np.int64)})
        example = bundle.recommend(users["user_id"].to_numpy(), 3)
        signature = infer_signature(users, example, params={"k": 100})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RetrievalPyfunc(), artifacts={"bundle": str(bundle_dir)},
            signature=signature, pip_requirements=_PIP,
        )
    return info.model_uri


def register(model_uri: str, run_id: str, alias: str | None = None) -> ModelVersion:
    """A new ``reelrank-retrieval`` version; ``alias`` (or champion, for the first) points at it."""
    return shared.register(model_uri, MODEL_NAME, run_id, alias)


def load(uri: str) -> tuple[Bundle, ModelVersion]:
    """The bundle of a registered version (downloaded once into MLflow's local cache)."""
    version = resolve(uri)
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    return model.unwrap_python_model().bundle, version
