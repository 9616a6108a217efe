"""Features for scoring a log, as the rows would have had them online.

A log from after the feature repo's events (a later week of the app) has no batch snapshots:
the daily job would have built one per day from every event before it. :func:`scoring_frame`
builds exactly those, with the same builder training uses: the history (the events before
the log, e.g. the model's training data) followed by the log itself go through
:func:`~training.ranker.pipeline.build_feature_repo` into a scratch repo, and the
point-in-time join reads each of the log's impressions from it. Snapshots only summarise
events before their own time, so nothing from after an impression reaches its row; the
real-time windows count the history's last events too, as the stream would have.

Without a history the log cannot be scored honestly (every batch feature would start from
zero): that is a :class:`features.freshness.StaleFeaturesError`, never a default.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from core.config import Settings
from features.freshness import StaleFeaturesError, uncovered
from training.datasets.store import Dataset
from training.ranker.pipeline import (
    build_feature_repo,
    feature_settings,
    point_in_time,
    timed_impressions,
)


def _ms(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.as_unit("ms").astype("int64")


def needs_rebuild(settings: Settings, repo: Path, log: pd.DataFrame) -> bool:
    """Whether some of the log's impressions are after the events ``repo`` was built from."""
    from features.store import read_meta

    meta = read_meta(feature_settings(settings, repo))
    return bool(uncovered(meta, _ms(timed_impressions(log)["ts"]).to_numpy()).any())


def with_history(history: Dataset, log: pd.DataFrame) -> Dataset:
    """``history``'s tables with the log's events added: the event stream up to the log's end.

    The log's rows replace their copies in the history (same user, video, time and event), so
    a log overlapping the history (or a span of it) is not counted twice; everything else the
    history holds, before or during the log, stays (a log may start with a few stray rows).
    """
    key = ["user_id", "item_id", "ts", "event"]
    past = history.interactions
    copies = pd.MultiIndex.from_frame(past[key]).isin(pd.MultiIndex.from_frame(log[key]))
    events = pd.concat([past[~copies], log], ignore_index=True)
    return replace(history, interactions=events)


def scoring_frame(settings: Settings, repo: Path, log: pd.DataFrame, items: pd.DataFrame,
                  history: Dataset | None, rebuild_into: Path | None,
                  labels: bool = False) -> pd.DataFrame:
    """The log's impressions with their point-in-time features (see the module docstring)
    and, with ``labels``, a column per task whose outcome the log has.

    Read from ``repo`` when it covers the log; else rebuilt into ``rebuild_into`` from
    ``history`` + the log. ``rebuild_into=None`` (no rebuild wanted) or no history for a log
    ``repo`` does not cover raise :class:`StaleFeaturesError`.
    """
    n = len(timed_impressions(log))
    if n == 0:
        raise StaleFeaturesError("the log has no timestamped impressions to score")
    prior = history.history if history is not None else None  # untimed, before every event
    if not needs_rebuild(settings, repo, log):
        return point_in_time(settings, repo, log, items, labels=labels, history=prior)
    if rebuild_into is None or history is None:
        # The builder's own check names the rows and the span that are missing.
        return point_in_time(settings, repo, log, items, labels=labels, history=prior)
    events = with_history(history, log)
    if items is not history.items:
        events = replace(events, items=items)
    build_feature_repo(settings, rebuild_into, events)
    frame = point_in_time(settings, rebuild_into, events.interactions, items, labels=labels,
                          history=prior)
    return frame.iloc[len(frame) - n :].reset_index(drop=True)
