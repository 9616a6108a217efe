"""The model lifecycle on real MLflow (SQLite): lineage tags on a trained version, the pre-deploy
gate (worse and incomparable versions refused, ``--force`` passes), and the rollback."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from core.config import Settings
from training import lineage
from training.datasets.store import write_dataset
from training.datasets.synth import SynthConfig, generate

runner = CliRunner()
NAME = "reelrank-retrieval"
METRIC = lineage.PRIMARY_METRICS[NAME]


def cli(*args: str):  # noqa: ANN201
    from core.cli import app

    return runner.invoke(app, list(args))


def errors(output: str) -> list[str]:
    return [x for x in output.splitlines() if x.startswith("error:")]


def test_fingerprint_follows_content_not_write_time(tmp_path: Path) -> None:
    tables = generate(SynthConfig(n_users=30, n_videos=40, n_topics=3, days=2, seed=4))
    a = write_dataset("a", tables, "synth", root=tmp_path)
    b = write_dataset("b", tables, "synth", root=tmp_path / "elsewhere")
    (b / "meta.json").write_text(json.dumps(
        json.loads((a / "meta.json").read_text()) | {"created_at": "2001-01-01T00:00:00"}))
    assert lineage.dataset_fingerprint(a) == lineage.dataset_fingerprint(b)
    other = write_dataset("c", generate(SynthConfig(n_users=30, n_videos=40, n_topics=3, days=2,
                                                    seed=5)), "synth", root=tmp_path)
    assert lineage.dataset_fingerprint(other) != lineage.dataset_fingerprint(a)
    assert lineage.code_version()  # a commit here, a package version when installed


def test_trained_version_carries_its_lineage(settings: Settings) -> None:
    torch.set_num_threads(1)
    tables = generate(SynthConfig(n_users=200, n_videos=300, n_topics=5, days=4, seed=1))
    data = write_dataset("synth", tables, "synth", root=settings.data_dir)
    res = cli("train", "retrieval", "--dataset", "synth", "--data", str(data), "--epochs", "1",
              "--threads", "1", "--no-progress", "--dim", "8", "--variant", "id")
    assert res.exit_code == 0, res.output
    client = MlflowClient()
    version = client.get_model_version(NAME, "1")
    tags = version.tags
    assert tags[lineage.TAG_FINGERPRINT] == lineage.dataset_fingerprint(data)
    assert tags[lineage.TAG_SPLIT].startswith("temporal 20")
    assert "item.item_id" in tags[lineage.TAG_FEATURES].split(",")
    assert "user.history" in tags[lineage.TAG_FEATURES].split(",")
    assert tags[lineage.TAG_CODE] not in ("", "unknown")
    assert tags[lineage.TAG_PRIMARY] == METRIC
    run = client.get_run(version.run_id)
    assert float(tags[f"metric.{METRIC}"]) == pytest.approx(run.data.metrics[METRIC], rel=1e-5)
    assert run.data.tags[lineage.TAG_FINGERPRINT] == tags[lineage.TAG_FINGERPRINT]
    assert "recall@50" in version.description
    table_path = tags[lineage.TAG_EVAL_TABLE].removeprefix(f"runs:/{version.run_id}/")
    assert table_path in {a.path for a in client.list_artifacts(version.run_id, "eval")}
    history = client.get_registered_model(NAME).tags["alias_history.champion"]
    assert json.loads(history) == ["1"]  # the first version became champion, and it is recorded


def _version(client: MlflowClient, value: float | None, fingerprint: str = "f" * 64,
             split: str = "temporal 2024-03-08") -> str:
    """A registered version of NAME whose run logged ``value`` as the primary metric."""
    mlflow.set_experiment("gate-test")
    with mlflow.start_run() as run:
        if value is not None:
            mlflow.log_metric(METRIC, value)
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    tags = {lineage.TAG_FINGERPRINT: fingerprint, lineage.TAG_SPLIT: split,
            lineage.TAG_PRIMARY: METRIC}
    return str(client.create_model_version(NAME, f"runs:/{run.info.run_id}/model",
                                           run.info.run_id, tags=tags).version)


def test_gate_refuses_worse_and_incomparable_force_passes_rollback_restores(
        settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    v1 = _version(client, 0.30)
    res = cli("deploy", "--model", "retrieval", "--version", v1, "--alias", "champion")
    assert res.exit_code == 0 and "no champion yet" in res.output, res.output

    worse = _version(client, 0.25)  # 16.7 % below, the margin is 2 %
    res = cli("deploy", "--model", "retrieval", "--version", worse, "--alias", "champion")
    assert res.exit_code == 2 and len(errors(res.output)) == 1, res.output
    assert "gate refused" in res.output and "-16.7%" in res.output and "--force" in res.output
    assert client.get_registered_model(NAME).aliases["champion"] == int(v1)
    # The gate guards every alias: a much worse challenger does not meet users either.
    res = cli("deploy", "--model", "retrieval", "--version", worse, "--alias", "challenger")
    assert res.exit_code == 2 and "challenger" not in client.get_registered_model(NAME).aliases

    within = _version(client, 0.297)  # 1 % below: inside the margin
    res = cli("deploy", "--model", "retrieval", "--version", within, "--alias", "champion")
    assert res.exit_code == 0 and "gate passed" in res.output, res.output

    other_data = _version(client, 0.9, fingerprint="0" * 64)
    other_split = _version(client, 0.9, split="temporal 2024-03-09")
    unlogged = _version(client, None)
    for version, why in ((other_data, "same data set"), (other_split, "same split"),
                         (unlogged, "not logged")):
        res = cli("deploy", "--model", "retrieval", "--version", version, "--alias", "champion")
        assert res.exit_code == 2 and why in errors(res.output)[0], res.output
    assert client.get_registered_model(NAME).aliases["champion"] == int(within)

    res = cli("deploy", "--model", "retrieval", "--version", worse, "--alias", "champion",
              "--force")
    assert res.exit_code == 0 and "forced past" in res.output, res.output
    assert client.get_registered_model(NAME).aliases["champion"] == int(worse)
    history = json.loads(client.get_registered_model(NAME).tags["alias_history.champion"])
    assert history == [v1, within, worse]

    res = cli("deploy", "rollback", "--model", "retrieval")
    assert res.exit_code == 0 and f"-> version {within}" in res.output, res.output
    assert client.get_registered_model(NAME).aliases["champion"] == int(within)
    res = cli("deploy", "rollback", "--model", "retrieval", "--alias", "champion")
    assert res.exit_code == 0 and client.get_registered_model(NAME).aliases["champion"] == int(v1)
    res = cli("deploy", "rollback", "--model", "retrieval")
    assert res.exit_code == 2 and "no earlier version" in errors(res.output)[0], res.output
    res = cli("deploy", "rollback", "--model", "retrieval", "--alias", "nope")
    assert res.exit_code == 2 and "no alias 'nope'" in errors(res.output)[0], res.output

    # An alias moved outside reelrank (the MLflow UI) still rolls back to where it was.
    client.set_registered_model_alias(NAME, "champion", other_data)
    res = cli("deploy", "rollback", "--model", "retrieval")
    assert res.exit_code == 0 and client.get_registered_model(NAME).aliases["champion"] == int(v1)
