"""Logging a model keeps MLflow's advice that does not apply to our bundles off the terminal,
and keeps everything else MLflow says."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Self

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from core.config import Settings
from training import registry


class TinyBundle:
    def __init__(self, value: int = 7) -> None:
        self.value = value

    def save(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        (path / "value.txt").write_text(str(self.value))
        return path

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls(int((path / "value.txt").read_text()))


class TinyPyfunc(registry.BundlePyfunc):
    bundle_type = TinyBundle

    def predict(self, context: object, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        return model_input.assign(score=float(self.bundle.value))


def test_logging_a_bundle_prints_none_of_the_advice_that_does_not_apply(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    registry.connect(settings.mlflow_tracking_uri)
    mlflow.set_experiment("tiny")
    users = pd.DataFrame({"user_id": [1, 2, 3]})  # integer ids, no input example, a pyfunc object
    with mlflow.start_run(), warnings.catch_warnings(record=True) as seen, \
            caplog.at_level(logging.INFO, logger="mlflow"):
        warnings.simplefilter("always")
        with registry.without_inapplicable_advice():
            signature = infer_signature(users, users.assign(score=1.0))
        uri = registry.log_bundle(TinyBundle(), TinyPyfunc(), signature)
    advice = [str(w.message) for w in seen if "integer column" in str(w.message)
              or "input example was not provided" in str(w.message)]
    assert advice == []
    assert not [r for r in caplog.records if "Passing a Python object" in r.getMessage()]
    assert TinyBundle.load(Path(mlflow.artifacts.download_artifacts(uri)) /
                           registry.BUNDLE_PATH).value == 7
    # The filter goes with the call: MLflow's pyfunc logger is as it was.
    assert not logging.getLogger("mlflow.pyfunc").filters
