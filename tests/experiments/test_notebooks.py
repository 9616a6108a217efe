"""Both notebooks run top to bottom (jupytext percent scripts executed by nbclient in a
python3 kernel) on small data made here."""

from __future__ import annotations

from pathlib import Path

import jupytext
import mlflow
import pytest
from nbclient import NotebookClient

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def execute(name: str) -> list[str]:
    """Run ``notebooks/<name>.py``; the text outputs of its cells."""
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return [o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
            for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_analyst_notebook(exp_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_DEMO", "1")
    monkeypatch.setenv("NOTEBOOK_EXPERIMENT", "nb-demo")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = "\n".join(execute("analyst_experiment"))
    assert "watch_time_per_user" in out and "SRM" in out


def test_ml_engineer_notebook(exp_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow.set_tracking_uri(exp_settings.mlflow_tracking_uri)
    mlflow.set_experiment("nb-models")
    client = mlflow.MlflowClient()
    client.create_registered_model(exp_settings.ranker_model)
    for alias, auc in (("champion", 0.70), ("challenger", 0.72)):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"auc_click": auc, "logloss": 1 - auc})
            mlflow.log_params({"epochs": 2})
        version = client.create_model_version(exp_settings.ranker_model, "file:///nowhere",
                                              run.info.run_id)
        client.set_registered_model_alias(exp_settings.ranker_model, alias, version.version)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = "\n".join(execute("ml_engineer_models"))
    assert "auc_click" in out and "champion (v1)" in out and "challenger (v2)" in out
