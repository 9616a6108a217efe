"""MLflow for the ranker: the pyfunc model, logging it with its signature, loading it back.

The registered model ``reelrank-ranker`` is a pyfunc whose input is a frame of raw feature
columns (one row per candidate, as in the point-in-time training set) and whose output is the
final ``score`` and one column per task; its artifact is the
:class:`~training.ranker.serving.RankerBundle` directory, which serving loads directly.
Experiment setup, registration and URI resolution are the shared :mod:`training.tracking`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from training import tracking
from training.ranker.serving import MODEL_NAME, RankerBundle

EXPERIMENT = "reelrank-ranker"
_PIP = ["torch==2.14.1", "numpy", "pandas", "pyarrow", "mlflow==3.17.2"]


def configure() -> None:
    tracking.configure(EXPERIMENT)


def output_frame(bundle: RankerBundle, scores: Any, preds: dict[str, Any]) -> pd.DataFrame:
    """``score`` then ``p_<task>`` per binary task and ``<task>`` per ratio task."""
    ratio = set(bundle.model.cfg.ratio_tasks)
    cols = {"score": scores} | {t if t in ratio else f"p_{t}": v for t, v in preds.items()}
    return pd.DataFrame(cols)


class RankerPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(frame of feature columns)`` -> score and per-task predictions per row."""

    def load_context(self, context: Any) -> None:
        self.bundle = RankerBundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return output_frame(self.bundle, *self.bundle.predict(model_input))


def log_bundle(bundle: RankerBundle, example: pd.DataFrame) -> str:
    """Log the model (signature from ``example`` rows of the training frame); its URI."""
    example = example[[c for c in bundle.columns if c in example]].head(5).reset_index(drop=True)
    # Numbers as doubles: a missing value (NaN) must pass the signature, it means "unknown".
    example = example.astype({c: "float64" for c in bundle.featurizer.numeric if c in example})
    output = output_frame(bundle, *bundle.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RankerPyfunc(), artifacts={"bundle": str(bundle_dir)},
            signature=infer_signature(example, output), input_example=example,
            pip_requirements=_PIP,
        )
    return info.model_uri


def register(model_uri: str, run_id: str, alias: str | None = None) -> ModelVersion:
    return tracking.register(model_uri, MODEL_NAME, run_id, alias)


def load(uri: str) -> tuple[RankerBundle, ModelVersion]:
    """The bundle of a registered version (downloaded once into MLflow's local cache); the
    tracking URI must be set (``configure`` or ``mlflow.set_tracking_uri``)."""
    version = tracking.resolve(uri)
    model = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    return model.unwrap_python_model().bundle, version
