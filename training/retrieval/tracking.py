"""MLflow for retrieval: experiment setup, the pyfunc model, registration and loading back.

The registered model ``reelrank-retrieval`` is a pyfunc whose input is a frame of ``user_id``
(and a ``k`` parameter) and whose output is each user's top-k; its artifact is the
:class:`~training.retrieval.bundle.Bundle`, which the CLI and the index builder load directly.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from core.config import get_settings
from training.retrieval.bundle import Bundle

EXPERIMENT = "reelrank-retrieval"
MODEL_NAME = "reelrank-retrieval"
FIRST_ALIAS = "champion"  # the first registered version gets it, so a fresh setup works end to end
_PIP = ["torch==2.14.1", "numpy", "pandas", "pyarrow", "mlflow==3.17.2"]
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelNotFound(LookupError):
    """A model URI that does not resolve; the message is one line."""


def configure() -> None:
    """Point MLflow at the settings' tracking URI; artifacts go under ``<var>/mlartifacts``."""
    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = settings.path("mlartifacts", EXPERIMENT).resolve()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location.as_uri())
    mlflow.set_experiment(EXPERIMENT)


def metric_key(name: str) -> str:
    """MLflow metric names allow no '@': recall@50 -> recall_at_50."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({prefix + metric_key(k): float(v) for k, v in metrics.items()}, step=step)


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
    client = MlflowClient()
    version = mlflow.register_model(model_uri, MODEL_NAME, tags={"run_id": run_id})
    if alias is None and not client.get_registered_model(MODEL_NAME).aliases:
        alias = FIRST_ALIAS
    if alias:
        client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    return version


def resolve(uri: str) -> ModelVersion:
    """The registry version behind ``models:/name@alias``, ``models:/name/3`` or ``/latest``."""
    m = _URI.match(uri)
    if not m:
        raise ModelNotFound(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient()
    try:
        if m["alias"]:
            return client.get_model_version_by_alias(m["name"], m["alias"])
        if m["version"] == "latest":
            versions = client.search_model_versions(f"name = '{m['name']}'")
            if not versions:
                raise ModelNotFound(f"{uri}: registered model {m['name']!r} has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(m["name"], m["version"])
    except MlflowException as exc:
        raise ModelNotFound(f"{uri}: {str(exc).splitlines()[0]}") from None


def load(uri: str) -> tuple[Bundle, ModelVersion]:
    """The bundle of a registered version (downloaded once into MLflow's local cache)."""
    version = resolve(uri)
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    return model.unwrap_python_model().bundle, version
