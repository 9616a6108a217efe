"""The per-user rows the analysis reads give the same analysis as the raw logs, whichever
order the worker sees the events in and however often; a row gone stale is recomputed."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
from sqlalchemy import delete, select

from core.events import Action, ExperimentExposure, UserInteraction
from experiments import aggregates, store
from experiments.analysis import Analysis, analyze
from experiments.exposures import apply_events
from experiments.logs import load
from experiments.models import Exposure, UserMetrics
from experiments.spec import parse_spec
from experiments.synthetic_logs import SyntheticConfig, generate


def _numbers(a: Analysis) -> list:
    """Every number of an analysis, flattened (for comparing two of them)."""
    out = [a.srm_chi2, a.srm_pvalue, a.excluded_users, *a.arms.to_numpy().ravel().tolist()]
    for comps in a.comparisons.values():
        out += [v for c in comps for v in c.__dict__.values() if not isinstance(v, str)]
    out += [v for g in a.guardrails for v in g.__dict__.values() if not isinstance(v, str)]
    for frame in a.cumulative.values():
        out += frame.drop(columns="day_end").to_numpy().ravel().tolist()
    return out


def _same(a: Analysis, b: Analysis) -> None:
    x, y = _numbers(a), _numbers(b)
    assert len(x) == len(y) and len(x) > 100
    for i, (u, v) in enumerate(zip(x, y, strict=True)):
        if isinstance(u, float) and math.isnan(u):
            assert isinstance(v, float) and math.isnan(v), i
        else:
            assert u == v or abs(u - v) <= 1e-9 * max(1.0, abs(u)), (i, u, v)


def test_stored_rows_give_the_analysis_of_the_logs(sessions) -> None:  # noqa: ANN001
    cfg = SyntheticConfig(users=1500, days=4, effect=0.2, seed=4)
    with sessions.begin() as s:
        store.create(s, parse_spec({"name": "same", "holdout": 10, "variants": [
            {"name": "control", "weight": 50},
            {"name": "treatment", "weight": 50, "explore_slots": 0.3}]}), lambda *_: None)
        # a day more than the logs span: none of their times is later than the stop below
        store.start(s, "same").started_at -= timedelta(days=cfg.days + 1)
    with sessions.begin() as s:
        generate(s, store.get(s, "same"), cfg)
    with sessions.begin() as s:
        stored = s.scalar(select(UserMetrics.user_id).limit(1))
        assert stored is not None, "the generator keeps the rows as the worker does"
        store.stop(s, "same")
    with sessions() as s:
        end = int(store.get(s, "same").stopped_at.timestamp() * 1000)
        fast, raw = analyze(s, "same", resamples=100), analyze(s, "same", end, resamples=100)
    assert fast.timings["metrics_s"] == 0.0 and raw.timings["metrics_s"] > 0  # two paths
    _same(fast, raw)

    with sessions.begin() as s:  # rows gone stale: a lost row, a new page the row predates
        exp = store.get(s, "same")
        users = s.scalars(select(UserMetrics.user_id).where(
            UserMetrics.experiment_id == exp.id).order_by(UserMetrics.user_id).limit(2)).all()
        s.execute(delete(UserMetrics).where(UserMetrics.user_id == users[0]))
        page = s.scalars(select(Exposure).where(Exposure.user_id == users[1])).first()
        s.add(Exposure(event_id=str(uuid.uuid4()), experiment_id=exp.id, variant=page.variant,
                       user_id=users[1], request_id="late", n_items=20, latency_ms=30.0,
                       occurred_at=page.occurred_at + timedelta(minutes=50)))
    with sessions() as s:
        _same(analyze(s, "same", resamples=100), analyze(s, "same", end, resamples=100))


def _events(exp_name: str, start, rng: np.random.Generator) -> list:  # noqa: ANN001
    events: list = []
    for user in range(1, 41):
        arm = "t" if user % 2 else "control"
        first = start + timedelta(minutes=int(rng.integers(0, 600)))
        for page in range(int(rng.integers(1, 4))):
            at = first + timedelta(minutes=40 * page)
            events.append(ExperimentExposure(
                user_id=user, request_id=f"{user}-{page}", experiment=exp_name, variant=arm,
                video_ids=[1, 2], latency_ms=float(rng.gamma(4, 10)), occurred_at=at))
            events.append(UserInteraction(user_id=user, action=Action.WATCH, video_id=1,
                                          watch_ms=int(rng.integers(100, 9000)),
                                          duration_ms=9000, occurred_at=at))
            if rng.random() < 0.3:
                events.append(UserInteraction(user_id=user, action=Action.LIKE, video_id=1,
                                              occurred_at=at))
        events.append(UserInteraction(user_id=user, action=Action.WATCH, video_id=2,
                                      watch_ms=4000, occurred_at=start - timedelta(days=3)))
    return events


def test_worker_rows_do_not_depend_on_order_or_redelivery(sessions) -> None:  # noqa: ANN001
    with sessions.begin() as s:
        store.create(s, parse_spec({"name": "order", "variants": [
            {"name": "control", "weight": 50}, {"name": "t", "weight": 50,
                                                "explore_slots": 0.3}]}), lambda *_: None)
        exp = store.start(s, "order")
        exp.started_at -= timedelta(days=1)
        start = exp.started_at
    rng = np.random.default_rng(7)
    events = _events("order", start, rng)
    shuffled = [events[i] for i in rng.permutation(len(events))]  # watches before their pages
    for lo in range(0, len(shuffled), 17):
        with sessions.begin() as s:
            apply_events(s, shuffled[lo:lo + 17])
    with sessions.begin() as s:
        apply_events(s, shuffled[:30])  # redelivered: already logged, rows recomputed alike
    with sessions() as s:
        exp = store.get(s, "order")
        kept = pd.read_sql(select(UserMetrics).where(UserMetrics.experiment_id == exp.id),
                           s.connection()).set_index("user_id").sort_index()
        logs = load(s, exp, aggregates.NO_END)
        rows, minutes = aggregates.compute(logs.start_ms, logs.exposures, logs.interactions,
                                           aggregates.NO_END)
    assert len(kept) == 40 and (kept["t0_ms"].to_numpy() == rows["t0"].to_numpy()).all()
    for name in ("watch_time_per_user", "likes_per_session", "completion_rate"):
        for column, computed in ((f"post_{name}", name), (f"pre_{name}", f"{name}__pre")):
            np.testing.assert_allclose(kept[column].astype(float), rows[computed], rtol=1e-12)
    assert kept["pre_watch_time_per_user"].gt(0).all(), "the pre-period watch counted"
    assert kept["post_likes_per_session"].gt(0).any()
    daily = np.array([np.pad(d, (0, minutes.shape[1] - len(d))) for d in kept["daily_watch"]])
    np.testing.assert_allclose(daily, minutes, rtol=1e-12)
