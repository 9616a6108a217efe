"""The retrieval commands end to end on real MLflow (SQLite) and a small synthetic world:
train -> register -> eval -> recommend -> index build, and bad input that registers nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from core.config import Settings
from training.datasets.store import write_dataset
from training.datasets.synth import SynthConfig, generate

runner = CliRunner()


def cli(*args: str):  # noqa: ANN201
    from core.cli import app

    return runner.invoke(app, list(args))


def one_error_line(output: str, message: str) -> bool:
    """Exactly one ``error:`` line, naming the problem (logging may precede it)."""
    errors = [x for x in output.splitlines() if x.startswith("error:")]
    return len(errors) == 1 and message in errors[0] and "Traceback" not in output.split(
        "Logging error")[-1]


def versions() -> int:
    """Registered retrieval versions in this test's own MLflow database."""
    from core.config import get_settings

    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    return len(client.search_model_versions("name = 'reelrank-retrieval'"))


@pytest.fixture
def synth_dir(settings: Settings):
    tables = generate(SynthConfig(n_users=300, n_videos=500, n_topics=6, days=5, seed=1))
    return write_dataset("synth", tables, "synth", root=settings.data_dir)


def test_train_register_eval_recommend_index(settings: Settings, synth_dir, tmp_path) -> None:
    common = ["--dataset", "synth", "--data", str(synth_dir), "--epochs", "2", "--threads", "1",
              "--no-progress", "--dim", "16"]
    res = cli("train", "retrieval", *common, "--variant", "id")
    assert res.exit_code == 0, res.output
    assert "registered models:/reelrank-retrieval/1" in res.output and "recall@50" in res.output
    client = MlflowClient()
    version = client.get_model_version_by_alias("reelrank-retrieval", "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["protocol"] == "temporal" and "test_recall_at_50" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"embeddings", "eval"} <= artifacts
    # Each fit is a nested run with its per-epoch metrics; the refit runs the tuned epochs.
    children = {c.data.params["phase"]: c for c in client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")}
    assert set(children) == {"tune", "refit"}
    tuned = client.get_metric_history(children["tune"].info.run_id, "valid_recall_at_50")
    epochs = int(run.data.params["best.epochs"])
    assert len(tuned) == 2 and epochs == 1 + int(np.argmax([m.value for m in tuned]))
    refit = client.get_metric_history(children["refit"].info.run_id, "loss")
    assert [m.step for m in refit] == list(range(1, epochs + 1))

    res = cli("eval", "retrieval", "--model", "models:/reelrank-retrieval@champion")
    assert res.exit_code == 0, res.output
    assert "recall@50" in res.output

    users = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": [0, 1, 10**12]}).to_parquet(users)  # the last one is unknown
    out = tmp_path / "recs.parquet"
    res = cli("recommend", "--model", "models:/reelrank-retrieval@champion", "--users", str(users),
              "--k", "7", "--out", str(out))
    assert res.exit_code == 0, res.output
    recs = pd.read_parquet(out)
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert recs.groupby("user_id")["rank"].apply(list).to_dict() == {
        u: list(range(1, 8)) for u in (0, 1, 10**12)}
    assert (recs.groupby("user_id")["score"].diff().dropna() <= 0).all()
    from training import registry
    from training.ranker.bundle import RankerBundle
    from training.retrieval.bundle import Bundle

    bundle, _ = registry.load_bundle("models:/reelrank-retrieval@champion", Bundle)
    with pytest.raises(registry.ModelNotFound, match="not a RankerBundle"):
        registry.load_bundle("models:/reelrank-retrieval@champion", RankerBundle)
    seen = bundle.data.ids.item_ids[bundle.data.item[
        bundle.data.indptr[1] : bundle.data.indptr[2]]]
    assert len(seen) and not set(recs[recs.user_id == 1].item_id) & set(seen)

    res = cli("index", "build", "--model", "models:/reelrank-retrieval@champion")
    assert res.exit_code == 0, res.output
    assert "recall@100 vs exact 1.0000" in res.output  # a small catalog gets exact search
    from candidate_gen.index_store import load_for_model

    index = load_for_model("models:/reelrank-retrieval@champion", settings.path("indexes"))
    assert len(index) == len(bundle.item_ids)
    # A video uploaded after training gets a vector from its features and becomes searchable.
    fresh = pd.DataFrame({"item_id": [10**9], "author_id": [3], "title": ["new"],
                          "duration_ms": [15_000], "upload_ts": [pd.Timestamp.now(tz="UTC")],
                          "tags": [["pets"]], "category": ["pets"]})
    vector = bundle.vectors_for_items(fresh)
    assert vector.shape == (1, 16) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    assert 10**9 not in index.search(vector, 5)[1]
    index.add(np.array([10**9]), vector)
    assert index.search(vector, 1)[1][0, 0] == 10**9
    tag = client.get_model_version("reelrank-retrieval", "1").tags["faiss_index"]
    spec = json.loads((settings.var_dir / "indexes/reelrank-retrieval/1/index.json").read_text())
    assert tag.startswith("runs:/") and spec["kind"] == "flat"

    # Bad input: one line on stderr, exit code 2, nothing registered.
    for args, message in [
        (["--data", str(tmp_path / "nowhere")], "no such file"),
        (["--data", str(synth_dir), "--train-end", "2000-01-01"], "no positive interactions"),
        (["--data", str(synth_dir), "--train-end", "not-a-date"], "not a date"),
    ]:
        res = cli("train", "retrieval", "--dataset", "synth", "--epochs", "1", "--no-progress",
                  *args)
        assert res.exit_code == 2 and one_error_line(res.output, message), res.output
    assert versions() == 1
    res = cli("eval", "retrieval", "--model", "models:/reelrank-retrieval@nope")
    assert res.exit_code == 2 and one_error_line(res.output, "nope"), res.output


def test_missing_column_is_one_line(settings: Settings, synth_dir) -> None:
    inter = pd.read_parquet(synth_dir / "interactions.parquet").drop(columns="item_id")
    inter.to_parquet(synth_dir / "interactions.parquet")
    res = cli("train", "retrieval", "--dataset", "synth", "--data", str(synth_dir),
              "--no-progress")
    assert res.exit_code == 2 and one_error_line(res.output, "item_id"), res.output
    assert versions() == 0
