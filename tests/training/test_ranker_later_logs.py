"""Scoring a log from after the model's data (issue 12): each row gets the batch features the
daily job would have built for it, or the scoring is refused; never silent defaults.

A 6-day synthetic world is cut after day 4: the model trains on days 1-3 and tests on day 4
(its in-period test day), then scores days 5-6, which its feature repo knows nothing about.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.config import Settings, get_settings
from features.freshness import StaleFeaturesError
from training.datasets.store import Dataset, write_dataset
from training.datasets.synth import SynthConfig, generate
from training.ranker.metrics import gauc
from training.ranker.pipeline import (
    Outcome,
    RunConfig,
    build_feature_repo,
    default_end,
    point_in_time,
    run,
)
from training.ranker.scoring import scoring_frame, with_history
from training.ranker.trainer import TrainConfig

LATER_DAYS = 2
MARGIN = 0.03  # GAUC the later span may lose against the in-period test day


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return generate(SynthConfig(n_users=150, n_videos=200, n_topics=5, days=6, seed=2))


@pytest.fixture(scope="module")
def cut(world: dict[str, pd.DataFrame]) -> pd.Timestamp:
    last = pd.to_datetime(world["interactions"]["ts"], utc=True).max().normalize()
    return last - pd.Timedelta(days=LATER_DAYS - 1)


def _dataset(tables: dict[str, pd.DataFrame]) -> Dataset:
    return Dataset("synth", Path("."), {}, tables["interactions"], tables["items"],
                   tables["users"], tables["follows"])


@pytest.fixture(scope="module")
def history(world: dict[str, pd.DataFrame], cut: pd.Timestamp) -> Dataset:
    inter = world["interactions"]
    return _dataset({**world, "interactions": inter[inter["ts"] < cut].reset_index(drop=True)})


@pytest.fixture(scope="module")
def later(world: dict[str, pd.DataFrame], cut: pd.Timestamp) -> pd.DataFrame:
    inter = world["interactions"]
    return inter[inter["ts"] >= cut].reset_index(drop=True)


@pytest.fixture(scope="module")
def repo(history: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("later") / "feature_repo"
    build_feature_repo(get_settings(), path, history)
    return path


@pytest.fixture(scope="module")
def trained(repo: Path, history: Dataset) -> Outcome:
    frame = point_in_time(get_settings(), repo, history.interactions, history.items)
    cfg = RunConfig(train=TrainConfig(epochs=8, batch_size=256), lightgbm=False,
                    single_tasks=(), threads=1)
    return run(frame, default_end(frame["ts"]), cfg)


@pytest.fixture(scope="module")
def rebuilt(repo: Path, history: Dataset, later: pd.DataFrame,
            tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    scratch = tmp_path_factory.mktemp("rebuilt") / "repo"
    return scoring_frame(get_settings(), repo, later, history.items, history, scratch)


def test_a_later_log_is_refused_rather_than_defaulted(repo: Path, history: Dataset,
                                                      later: pd.DataFrame) -> None:
    settings = get_settings()
    n = f"{len(later):,}"
    with pytest.raises(StaleFeaturesError, match=f"{n} of {n} impressions .* never built"):
        point_in_time(settings, repo, later, history.items, labels=False)
    with pytest.raises(StaleFeaturesError, match="never built"):  # no rebuild asked for
        scoring_frame(settings, repo, later, history.items, history, None)
    with pytest.raises(StaleFeaturesError, match="never built"):  # nothing to rebuild from
        scoring_frame(settings, repo, later, history.items, None, Path("/nonexistent"))
    # The repo's own span is served as before.
    assert len(point_in_time(settings, repo, history.interactions, history.items)) > 4000


def test_rebuilt_rows_equal_the_full_log_point_in_time_rows(
    world: dict[str, pd.DataFrame], later: pd.DataFrame, rebuilt: pd.DataFrame,
    trained: Outcome, tmp_path: Path,
) -> None:
    """The snapshots rebuilt for the later log are the ones a build over the whole log (the
    daily job that kept running) makes: every feature of every later row is equal."""
    build_feature_repo(get_settings(), tmp_path / "full", _dataset(world))
    full = point_in_time(get_settings(), tmp_path / "full", world["interactions"],
                         world["items"], labels=False)
    reference = full.iloc[len(full) - len(later):].reset_index(drop=True)
    assert len(rebuilt) == len(later)
    assert (rebuilt["video_id"].to_numpy() == later["item_id"].to_numpy()).all()
    cols = trained.bundle.columns
    pd.testing.assert_frame_equal(rebuilt[cols], reference[cols])
    # Not vacuous: the later rows do carry batch history (not the defaults of an empty repo).
    assert (rebuilt["u_impressions_7d"] > 0).mean() > 0.9
    assert rebuilt["v_click_rate"].nunique() > 50


def test_later_span_keeps_the_in_period_gauc(trained: Outcome, later: pd.DataFrame,
                                             rebuilt: pd.DataFrame) -> None:
    scores, probs = trained.bundle.predict(rebuilt)
    for task, label in (("click", "clicked"), ("long_view", "long_view")):
        in_period = trained.metrics["ranker"][f"{task}_gauc"]
        value, users = gauc(later["user_id"].to_numpy(), later[label].to_numpy(float),
                            np.asarray(probs[task]))
        assert users > 50
        assert value >= in_period - MARGIN, (task, value, in_period)


runner = CliRunner()


def _saved_model_and_log(settings: Settings, history: Dataset, later: pd.DataFrame, repo: Path,
                         trained: Outcome, tmp_path: Path) -> tuple[Path, Path]:
    """The trained ranker saved as the CLI loads one (its training data the history, its
    feature repo ``repo``) and the later log as a file."""
    data = write_dataset(f"hist-{tmp_path.name}", {
        "interactions": history.interactions, "items": history.items, "users": history.users,
        "follows": history.follows}, "synth", root=settings.data_dir)
    model = tmp_path / "bundle"
    replace(trained.bundle, meta={**trained.bundle.meta, "data": str(data),
                                  "feature_repo": str(repo)}).save(model)
    log = tmp_path / "later.parquet"
    later.to_parquet(log)
    return model, log


def test_rank_cli_rebuilds_from_the_models_data_or_refuses(
    settings: Settings, history: Dataset, later: pd.DataFrame, repo: Path, trained: Outcome,
    rebuilt: pd.DataFrame, tmp_path: Path,
) -> None:
    from core.cli import app

    model, log = _saved_model_and_log(settings, history, later, repo, trained, tmp_path)
    out = tmp_path / "none.parquet"
    res = runner.invoke(app, ["rank", "--model", str(model), "--impressions", str(log),
                              "--out", str(out), "--no-rebuild-features"])
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "never built" in errors[0], res.output
    assert not out.exists()

    out = tmp_path / "scored.parquet"
    res = runner.invoke(app, ["rank", "--model", str(model), "--impressions", str(log),
                              "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "rebuilding" in res.output
    scored = pd.read_parquet(out)
    _, probs = trained.bundle.predict(rebuilt)
    assert np.allclose(scored["p_click"].to_numpy(), probs["click"], atol=1e-6)
    assert not list(Path(settings.var_dir).glob("rank-features-*")), "scratch repo left behind"


def test_eval_ranker_cli_reports_the_later_logs_metrics(
    settings: Settings, history: Dataset, later: pd.DataFrame, repo: Path, trained: Outcome,
    rebuilt: pd.DataFrame, tmp_path: Path,
) -> None:
    """``reelrank eval ranker``: the same rows as ``rank`` (rebuilt snapshots), scored against
    the log's own outcomes; its GAUC is the one computed here from the rebuilt rows."""
    from core.cli import app

    model, log = _saved_model_and_log(settings, history, later, repo, trained, tmp_path)
    res = runner.invoke(app, ["eval", "ranker", "--model", str(model), "--impressions",
                              str(log), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert f"{len(later):,} impressions" in res.output
    _, probs = trained.bundle.predict(rebuilt)
    expected, _ = gauc(later["user_id"].to_numpy(), later["clicked"].to_numpy(float),
                       np.asarray(probs["click"]))
    row = next(line.split() for line in res.output.splitlines() if line.startswith("click "))
    header = next(line.split() for line in res.output.splitlines() if "gauc" in line)
    assert float(row[header.index("gauc") + 2]) == pytest.approx(expected, abs=1e-4)
    # A log without outcomes cannot be evaluated: one error line, exit 2.
    later.drop(columns=["clicked", "long_view", "liked", "followed", "shared", "hated",
                        "commented", "watch_ms"], errors="ignore").to_parquet(log)
    res = runner.invoke(app, ["eval", "ranker", "--model", str(model), "--impressions",
                              str(log), "--threads", "1"])
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output


def test_the_logs_rows_replace_their_copies_in_the_history(history: Dataset,
                                                           later: pd.DataFrame) -> None:
    span = history.interactions.iloc[-500:]
    events = with_history(history, span).interactions
    assert len(events) == len(history.interactions), "an overlapping span is not doubled"
    pd.testing.assert_frame_equal(events.iloc[-500:].reset_index(drop=True),
                                  span.reset_index(drop=True))
    whole = with_history(history, later).interactions
    assert len(whole) == len(history.interactions) + len(later)
    # A stray early row does not drop the history's events after it.
    stray = history.interactions.iloc[[100]]
    events = with_history(history, pd.concat([stray, later])).interactions
    assert len(events) == len(history.interactions) + len(later)
