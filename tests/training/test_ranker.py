"""The ranker's training side on a small synthetic world and a real (file-based) Feast repo:
metrics on hand-made examples, the featurizer, the pipeline's quality and calibration, no
leakage from after an impression into its score, and the CLI end to end on real MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from core.config import Settings, get_settings
from core.dataset_schema import DataError
from training.datasets.store import Dataset, write_dataset
from training.datasets.synth import SynthConfig, generate
from training.lineage import dataset_fingerprint
from training.ranker.featurizer import Featurizer
from training.ranker.history import HISTORY_COLUMN
from training.ranker.metrics import auc, calibration, ece, gauc
from training.ranker.pipeline import (
    Outcome,
    RunConfig,
    build_feature_repo,
    default_end,
    point_in_time,
    run,
)
from training.ranker.trainer import TrainConfig

DAY = pd.Timedelta(days=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- metrics ----------------------------------------------------------------------------------


def test_gauc_on_a_hand_made_example() -> None:
    users = np.array([1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4])
    y = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.1, 0.2, 0.6, 0.7, 0.1, 0.3, 0.4, 0.5, 0.5])
    # user 1: 1.0 (3 rows); user 2: 3 of 4 pairs (4 rows); user 3: one class, left out;
    # user 4: a tie counts half (2 rows).
    value, n_users = gauc(users, y, p)
    assert n_users == 3
    assert value == pytest.approx((3 * 1.0 + 4 * 0.75 + 2 * 0.5) / 9)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    # A score that only separates users lifts the global AUC, never the GAUC.
    offset = np.where(users == 1, 0.9, 0.1) + 0.0 * y
    assert gauc(users, y, offset)[0] == pytest.approx(0.5)
    assert np.isnan(auc(np.zeros(3), np.ones(3)))


def test_calibration_buckets_and_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000) * 0.5
    y = (rng.random(50_000) < p).astype(float)
    table = calibration(y, p, buckets=10)
    assert len(table) == 10 and table["n"].sum() == 50_000
    assert (table["predicted"].diff().dropna() > 0).all()
    assert ece(y, p) < 0.01
    assert ece(y, np.clip(p + 0.2, 0, 1)) == pytest.approx(0.2, abs=0.01)


# --- featurizer -------------------------------------------------------------------------------


def test_featurizer_unknown_rare_scalar_and_clipped() -> None:
    frame = pd.DataFrame({"video_id": [5, 5, 7, 9, 9], "tag": ["a", "a", "b", "b", None],
                          "views": [0.0, 10.0, 100.0, 1000.0, np.nan]})
    fz = Featurizer.fit(frame, ["video_id", "tag"], ["views"], min_count=2)
    cat, num = fz.encode(frame)
    assert fz.cardinalities == (3, 3)
    assert cat[2, 0] == 0, "a video seen once shares the unknown row"
    assert cat[0, 0] == cat[1, 0] > 0 and cat[3, 0] == cat[4, 0] > 0
    assert num[4, 0] == 0.0, "missing -> the training mean"
    new = pd.DataFrame({"video_id": [123], "views": [10**9]})
    cat_new, num_new = fz.encode(new)
    assert cat_new.tolist() == [[0, 0]], "new ids and absent columns are unknown, not errors"
    assert num_new[0, 0] == pytest.approx(num.max()), "beyond the training range: clipped"
    # One scalar for all rows encodes like the same value repeated.
    cat_s, num_s = fz.encode(pd.DataFrame({"tag": ["a", "b"], "views": [1.0, 2.0]}),
                             {"video_id": 9, "views": 10.0})
    cat_r, num_r = fz.encode(pd.DataFrame({"video_id": [9, 9], "tag": ["a", "b"],
                                           "views": [10.0, 10.0]}))
    assert (cat_s == cat_r).all() and np.allclose(num_s, num_r)
    again = Featurizer.from_dict(fz.to_dict())
    assert all((a == b).all() for a, b in zip(again.encode(frame), fz.encode(frame), strict=True))


# --- the pipeline on a synthetic world --------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return generate(SynthConfig(n_users=150, n_videos=200, n_topics=5, days=4, seed=2))


def _dataset(tables: dict[str, pd.DataFrame]) -> Dataset:
    return Dataset("synth", Path("."), {}, tables["interactions"], tables["items"],
                   tables["users"], tables["follows"])


@pytest.fixture(scope="module")
def repo(world: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ranker") / "feature_repo"
    build_feature_repo(get_settings(), path, _dataset(world))
    return path


@pytest.fixture(scope="module")
def frame(repo: Path, world: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return point_in_time(get_settings(), repo, world["interactions"], world["items"])


@pytest.fixture(scope="module")
def end(frame: pd.DataFrame) -> pd.Timestamp:
    return default_end(frame["ts"])


@pytest.fixture(scope="module")
def trained(frame: pd.DataFrame, end: pd.Timestamp) -> Outcome:
    cfg = RunConfig(train=TrainConfig(epochs=8, batch_size=256), single_tasks=("click",),
                    threads=1)
    return run(frame, end, cfg)


def test_ranker_learns_is_calibrated_and_is_compared(trained: Outcome) -> None:
    ranker = trained.metrics["ranker"]
    assert {"click", "long_view", "like", "watch_ratio"} <= set(trained.tasks)
    assert ranker["click_auc"] > 0.7 and ranker["long_view_auc"] > 0.7
    assert ranker["click_gauc"] > 0.65 and ranker["click_gauc_users"] > 50
    for task in ("click", "long_view", "like"):
        assert abs(ranker[f"{task}_mean_pred"] - ranker[f"{task}_mean_obs"]) < 0.05, task
        assert ranker[f"{task}_ece"] < 0.06, task
    # The baselines ran on the same test rows.
    assert trained.metrics["lightgbm"]["click_auc"] > 0.7
    assert trained.metrics["single-task"]["click_auc"] > 0.7
    assert "like_auc" not in trained.metrics["single-task"]
    table = trained.eval_table
    assert set(table["model"]) == {"ranker", "lightgbm", "single-task"}
    assert set(trained.calibration["task"]) == set(trained.tasks)


def test_serving_inputs_score_like_the_training_frame(trained: Outcome,
                                                      frame: pd.DataFrame) -> None:
    """Scalars per request + a candidate frame indexed by video_id == the flat frame."""
    bundle = trained.bundle
    rows = frame[frame["user_id"] == frame["user_id"].iloc[-1]].tail(20)
    user = {c: rows[c].iloc[-1] for c in bundle.columns if c.startswith(("u_", "ctx_"))}
    user["user_id"] = rows["user_id"].iloc[-1]
    rows = rows.assign(**user)  # one request: the same user and context on every row
    # ... and the same watch history (the user's list; a column of lists in the flat frame)
    user[HISTORY_COLUMN] = rows[HISTORY_COLUMN].iloc[-1]
    rows[HISTORY_COLUMN] = [user[HISTORY_COLUMN]] * len(rows)
    items = rows[[c for c in bundle.columns if c not in user]].set_index("video_id")
    scores, probs = bundle.predict(items, user)
    assert np.allclose(scores, bundle.score(rows), atol=1e-6)
    weights = bundle.model.cfg.score_weights
    assert np.allclose(scores, sum(weights[t] * p for t, p in probs.items()), atol=1e-5)
    assert set(probs) == set(bundle.tasks)


def test_no_feature_from_after_an_impression_reaches_its_score(
    trained: Outcome, frame: pd.DataFrame, world: dict[str, pd.DataFrame], repo: Path,
    end: pd.Timestamp, tmp_path: Path,
) -> None:
    """Rewrite the future (everything from ``cut`` on is clicked, liked, shared and watched
    twice), rebuild the feature store: impressions before ``cut`` keep every feature and their
    scores; later ones change (so the test can fail)."""
    cut = end - DAY
    inter = world["interactions"].copy()
    later = inter["ts"] >= cut
    for flag in ("clicked", "long_view", "liked", "shared", "followed"):
        inter.loc[later, flag] = True
    inter.loc[later, "watch_ms"] = inter.loc[later, "duration_ms"] * 2
    changed = {**world, "interactions": inter}
    build_feature_repo(get_settings(), tmp_path / "repo", _dataset(changed))
    rewritten = point_in_time(get_settings(), tmp_path / "repo", inter, world["items"],
                              labels=False)

    bundle = trained.bundle
    before = (frame["ts"] < cut).to_numpy()
    assert before.sum() > 500 and (~before).sum() > 500
    cols = bundle.columns
    pd.testing.assert_frame_equal(frame.loc[before, cols], rewritten.loc[before, cols])
    old, new = bundle.score(frame), bundle.score(rewritten)
    assert np.array_equal(old[before], new[before])
    assert not np.allclose(old[~before], new[~before])


# --- the CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str):  # noqa: ANN201
    from core.cli import app

    return runner.invoke(app, list(args))


def test_train_register_rank_and_bad_input(settings: Settings, world: dict[str, pd.DataFrame],
                                           repo: Path, frame: pd.DataFrame,
                                           tmp_path: Path) -> None:
    data = write_dataset("synth", world, "synth", root=settings.data_dir)
    res = cli("train", "ranker", "--dataset", "synth", "--data", str(data), "--feature-repo",
              str(repo), "--no-build-features", "--epochs", "3", "--batch-size", "256",
              "--threads", "1", "--no-progress", "--single-task", "", "--weights", "like=3")
    assert res.exit_code == 0, res.output
    assert "registered models:/reelrank-ranker/1" in res.output and "gauc" in res.output
    client = MlflowClient()
    version = client.get_model_version_by_alias("reelrank-ranker", "champion")
    got = client.get_run(version.run_id).data
    assert got.params["dataset"] == "synth" and got.params["weight.like"] == "3.0"
    # Whether the network reads the watch history is a recorded choice, and the run says it.
    reads = {"True": "read", "False": "not read"}[got.params["chosen.history"]]
    assert f"watch history {reads};" in res.output
    for model in ("ranker", "lightgbm"):  # the baseline in the same run
        assert got.metrics[f"test_{model}_click_gauc"] > 0.6
    assert client.get_metric_history(version.run_id, "tune_valid_loss")
    assert "eval" in {a.path for a in client.list_artifacts(version.run_id)}
    tags = version.tags  # the lineage the pre-deploy gate and the registry UI read
    assert tags["dataset_fingerprint"] == dataset_fingerprint(data)
    assert {"video_id", "v_click_rate"} <= set(tags["features"].split(","))
    assert tags["primary_metric"] == "test_ranker_click_auc" and tags["code_version"]
    assert float(tags["metric.test_ranker_click_auc"]) == pytest.approx(
        got.metrics["test_ranker_click_auc"], rel=1e-5)
    assert "click" in version.description
    signature = get_model_info("models:/reelrank-ranker/1").signature
    assert {"video_id", "v_click_rate"} <= set(signature.inputs.input_names())
    assert {"score", "p_click"} <= set(signature.outputs.input_names())

    out = tmp_path / "scored.parquet"
    res = cli("rank", "--model", "models:/reelrank-ranker@champion", "--impressions",
              str(data / "interactions.parquet"), "--out", str(out))
    assert res.exit_code == 0, res.output
    scored = pd.read_parquet(out)
    assert list(scored.columns[:4]) == ["user_id", "video_id", "time_ms", "score"]
    assert {"p_click", "p_long_view", "p_like", "watch_ratio"} <= set(scored.columns)
    assert len(scored) == len(frame)
    expected_ms = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ms").astype("int64")
    assert (scored["time_ms"].to_numpy() == expected_ms.to_numpy()).all()
    assert scored["p_click"].between(0, 1).all() and np.isfinite(scored["score"]).all()

    res = cli("rank", "--model", "models:/reelrank-ranker@nope", "--impressions",
              str(data / "interactions.parquet"), "--out", str(tmp_path / "none.parquet"))
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "@nope" in errors[0]
    assert not (tmp_path / "none.parquet").exists()


# --- the protocol: every choice on validation (issue 12) -------------------------------------


def test_choices_are_made_on_validation_and_recorded(trained: Outcome) -> None:
    sel = trained.selection
    assert sel is not None
    assert len(sel.net_trials) == RunConfig().grids.budget == len(sel.lgb_trials)
    assert {(t["aux_weight"], t["lr"]) for t in sel.net_trials} == {
        (a, lr) for a in RunConfig().grids.aux_weights for lr in RunConfig().grids.learning_rates}
    assert sel.chosen in ("multi-task", "single-task")
    assert set(sel.lgb_params) == set(trained.tasks)
    assert {"click", "long_view"} <= set(sel.valid_gauc["ranker"])
    assert {t["task"] for t in sel.calibration_trials} >= {"click", "long_view"}
    assert set(sel.calibration) <= {t["task"] for t in sel.calibration_trials if t["kept"]}
    assert trained.cost["ranker_examples_per_s"] > 0 and trained.cost["ranker_s_per_epoch"] > 0
    # Serving's bfloat16 network is checked on validation beside float32 (reported, not chosen)
    assert sel.precision_gauc["float32"] == sel.valid_gauc["ranker"]
    for task, full in sel.precision_gauc["float32"].items():
        assert abs(sel.precision_gauc["bfloat16"][task] - full) < 0.01, task


def test_the_history_input_is_a_validated_choice(trained: Outcome,
                                                 frame: pd.DataFrame) -> None:
    """Both network variants (with and without target attention over the watch history) are
    tried on validation; the bundle reads the history exactly when the chosen one does, and
    then its scores depend on it."""
    sel = trained.selection
    assert sel is not None
    assert {t["history"] for t in sel.net_trials} == set(RunConfig().grids.history)
    bundle = trained.bundle
    assert bool(bundle.featurizer.history_len) == sel.history == bool(
        bundle.model.cfg.history_len)
    rows = frame.tail(200)
    emptied = rows.assign(**{HISTORY_COLUMN: [[] for _ in range(len(rows))]})
    changed = not np.allclose(bundle.score(rows), bundle.score(emptied))
    assert changed == sel.history


def test_selection_never_receives_a_test_row(frame: pd.DataFrame, end: pd.Timestamp,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on the selection function: every row it gets is before the test day; and
    rewriting the test day's labels changes no choice."""
    import training.ranker.pipeline as pipeline
    from training.ranker.selection import Grids

    seen = []

    def spy(net, tune, valid, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append((tune, valid))
        return real(net, tune, valid, *args, **kwargs)

    real = pipeline.select
    monkeypatch.setattr(pipeline, "select", spy)
    cfg = RunConfig(train=TrainConfig(epochs=3, batch_size=256), single_tasks=("click",),
                    threads=1, grids=Grids(aux_weights=(0.3, 1.0), learning_rates=(2e-3,)))
    first = run(frame, end, cfg)
    end_ms = end.value // 1_000_000
    tune, valid = seen[0]
    assert len(tune) + len(valid) == first.rows["train"] and len(valid) == first.rows["valid"]
    assert tune.ts_ms.max() < valid.ts_ms.min() and valid.ts_ms.max() < end_ms
    flipped = frame.copy()
    test_day = (flipped["ts"] >= end).to_numpy()
    for task in ("click", "long_view", "like"):
        flipped.loc[test_day, task] = 1 - flipped.loc[test_day, task]
    second = run(flipped, end, cfg)
    a, b = first.selection, second.selection
    assert (a.train, a.chosen, a.lgb_params, a.lgb_rounds, a.calibration, a.history) == (
        b.train, b.chosen, b.lgb_params, b.lgb_rounds, b.calibration, b.history)
    assert first.metrics["ranker"]["click_auc"] != second.metrics["ranker"]["click_auc"]


def test_bench_days_follow_the_chosen_test_day() -> None:
    """``reelrank bench ranker --test-day`` describes the split it ran: KuaiRand's local days
    (UTC+8), the validation day just before the test day."""
    from benchmarks.ranker import _days
    from training.retrieval.pipeline import parse_day

    ts = pd.to_datetime(["2022-04-24T16:30:00Z", "2022-04-28T10:00:00Z"], utc=True)
    days = _days(pd.DataFrame({"ts": ts}), parse_day("2022-04-29", "kuairand"))
    assert days == {"first": "2022-04-25", "valid": "2022-04-28", "train": 4}


def test_bench_shows_how_the_test_days_features_moved() -> None:
    """The report's shift table: per local day its weekday and size, and a feature that
    jumps on the test day (and not the day before) listed first with its step in training
    standard deviations; no label column is needed."""
    from benchmarks.ranker import _shift
    from training.retrieval.pipeline import parse_day

    ts = pd.to_datetime([f"2022-04-{d}T04:00:00Z" for d in (27, 27, 28, 28, 29, 29)], utc=True)
    frame = pd.DataFrame({"ts": ts, "jumps": [0.0, 2.0, 0.0, 2.0, 4.0, 6.0],
                          "steady": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]})
    text = _shift(frame, parse_day("2022-04-29", "kuairand"), ["steady", "jumps"])
    assert "| 2022-04-29 | Friday | 2 |" in text
    rows = [line.removesuffix(" |") for line in text.splitlines()
            if line.startswith(("| jumps", "| steady"))]
    assert rows[0].split(" | ")[:5] == ["| jumps", "1", "5", "+3.46", "+0.00"]
    assert rows[1].split(" | ")[3] == "+0.00"


def test_bench_tests_on_the_logs_last_day_unless_told() -> None:
    """``reelrank bench ranker`` with no ``--test-day`` tests on the log's last local day
    (04-30 on KuaiRand-Pure, a later log's own last day), as ``reelrank train ranker`` splits;
    an earlier day is a check before it; a day the log lacks is refused."""
    from benchmarks.ranker import split_day
    from training.retrieval.pipeline import parse_day

    ts = pd.Series(pd.to_datetime(["2022-04-24T16:30:00Z", "2022-04-30T10:00:00Z",
                                   "2022-05-06T02:00:00Z", "2022-05-07T03:00:00Z"], utc=True))
    assert split_day(ts, None) == (parse_day("2022-05-07", "kuairand"), True)
    assert split_day(ts, "2022-04-30") == (parse_day("2022-04-30", "kuairand"), False)
    with pytest.raises(DataError, match="no impressions that day"):
        split_day(ts, "2022-05-09")
