"""``reelrank experiment analyze`` on logs with a known truth: a planted lift is found with
its interval, an A/A split is not flagged, a tampered assignment is, the report and MLflow
artifact exist."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from core.cli import app as cli
from core.config import Settings
from experiments import store
from experiments.analysis import analyze
from experiments.report import MLFLOW_EXPERIMENT
from experiments.spec import parse_spec
from experiments.synthetic_logs import SyntheticConfig, generate


def make(sessions, name: str, cfg: SyntheticConfig, tamper: float = 0.0,  # noqa: ANN001
         holdout: float = 0.0) -> None:
    """A started experiment ``name`` with ``cfg``'s logs. Its salt is pinned to the seed, so
    the users' arms, and with them every number the tests check, are the same on every run
    (a random salt made the A/A interval exclude zero in about one run in twenty)."""
    with sessions.begin() as s:
        store.create(s, parse_spec({"name": name, "holdout": holdout, "variants": [
            {"name": "control", "weight": 50},
            {"name": "treatment", "weight": 50, "explore_slots": 0.3}]}), lambda *_: None)
        exp = store.start(s, name)
        exp.salt = f"{name}:{cfg.seed}"
        exp.started_at -= timedelta(days=cfg.days)  # the logs cover the last week
    with sessions.begin() as s:
        generate(s, store.get(s, name), cfg, tamper)


def test_planted_lift_is_found_and_reported(sessions, exp_settings: Settings,
                                            tmp_path) -> None:  # noqa: ANN001
    make(sessions, "lift", SyntheticConfig(users=2500, effect=0.3, seed=1), holdout=10)
    with sessions() as s:
        a = analyze(s, "lift", resamples=200)
    assert not a.srm and a.excluded_users == 0
    assert set(a.arms.index) == {"control", "treatment", "holdout"}
    watch = next(c for c in a.comparisons["treatment"] if c.metric == "watch_time_per_user")
    assert watch.cuped and watch.pvalue < 0.001 and watch.seq_pvalue < 0.05
    truth = (1 + 14 * 1.3) / (1 + 14) - 1  # SyntheticConfig.effect's definition: +28 %
    assert watch.rel_lo < truth < watch.rel_hi and watch.rel_lo > 0.1
    assert watch.boot_lo > 0 and watch.diff_lo > 0
    assert {c.metric for c in a.comparisons["treatment"]} >= {
        "completion_rate", "likes_per_session", "return_d1", "topic_diversity", "report_rate"}
    cum = a.cumulative["treatment"]
    assert len(cum) >= 7 and cum["p_seq"].is_monotonic_decreasing
    assert {g.metric for g in a.guardrails} == {"latency_p99_ms", "error_rate"}
    assert not any(g.breached for g in a.guardrails)

    result = CliRunner().invoke(cli, ["experiment", "analyze", "lift", "--out",
                                      str(tmp_path), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "watch_time_per_user" in result.output and "SRM" in result.output
    page = (tmp_path / "lift.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Hypothesis" in page
    mlflow.set_tracking_uri(exp_settings.mlflow_tracking_uri)
    with sessions() as s:
        run_id = store.get(s, "lift").mlflow_run_id
    run = MlflowClient().get_run(run_id)
    assert run.info.run_name == "lift"
    assert MlflowClient().get_experiment(run.info.experiment_id).name == MLFLOW_EXPERIMENT
    names = {f.path for f in MlflowClient().list_artifacts(run_id, "report")}
    assert names == {"report/lift.html", "report/lift.csv"}
    assert "treatment.watch_time_per_user.rel" in run.data.metrics


@pytest.mark.parametrize(("tamper", "flagged"), [(0.0, False), (0.2, True)])
def test_srm_flags_a_tampered_assignment(sessions, tamper: float,  # noqa: ANN001
                                         flagged: bool) -> None:
    make(sessions, f"srm{int(tamper * 100)}", SyntheticConfig(users=2000, seed=2), tamper)
    with sessions() as s:
        a = analyze(s, f"srm{int(tamper * 100)}", resamples=100)
    assert a.srm is flagged, a.arms
    watch = next(c for c in a.comparisons["treatment"] if c.metric == "watch_time_per_user")
    if not flagged:  # A/A data: no effect claimed
        assert watch.seq_pvalue > 0.05 and watch.rel_lo < 0 < watch.rel_hi


def test_users_switched_between_arms_are_excluded(sessions) -> None:  # noqa: ANN001
    make(sessions, "switch", SyntheticConfig(users=500, days=3, seed=3))
    from sqlalchemy import update

    from experiments.models import Exposure

    with sessions.begin() as s:
        victim = s.scalar(Exposure.__table__.select().with_only_columns(
            Exposure.user_id).limit(1))
        s.execute(update(Exposure).where(Exposure.user_id == victim, Exposure.id % 2 == 0)
                  .values(variant="treatment"))
        s.execute(update(Exposure).where(Exposure.user_id == victim, Exposure.id % 2 == 1)
                  .values(variant="control"))
    with sessions() as s:
        assert analyze(s, "switch", resamples=100).excluded_users == 1
