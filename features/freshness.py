"""How far the batch snapshots reach: offline (which rows a repo can honestly serve) and online
(how old each view's materialized values are).

Batch views are daily snapshots with a TTL (:data:`features.repo.SNAPSHOT_TTL`). A row asked
for after the events its repo was built from has no snapshot that the daily job would have
built for it: Feast then returns the last snapshot while it is within its TTL and nothing
after, and the reader fills the gap with defaults. That is silent damage, so:

- offline, :func:`check_coverage` refuses rows after the repo's log (``log_end_ms`` in
  ``meta.json``, written by :func:`features.batch.build_features`) with a
  :class:`StaleFeaturesError` that names the span; the caller rebuilds the snapshots from a
  log that covers them (``reelrank rank`` does) or passes a repo that does;
- online, :func:`record_materialization` notes the newest snapshot each batch view has in the
  online store (``<repo>/materialized.json``), :func:`view_ages` reads it back and
  :func:`is_stale` says whether a view is older than its TTL (a degraded response). The same
  ages go to the Prometheus gauge ``reelrank_feature_view_age_seconds``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Gauge

from core.clock import utcnow
from core.config import Settings
from features.repo import BATCH_VIEWS, VIEW_BY_NAME
from features.store import FeatureStoreError, repo_dir

MATERIALIZED_FILE = "materialized.json"
VIEW_AGE = Gauge(
    "reelrank_feature_view_age_seconds",
    "Age of the newest snapshot of each batch feature view in the online store",
    ["view"],
)


class StaleFeaturesError(FeatureStoreError):
    """Rows asked for after the events the feature repo was built from."""


def log_end_ms(meta: dict[str, Any]) -> int | None:
    """The time of the last event the repo's snapshots saw (``None``: no build yet).

    Repos built before ``log_end_ms`` was recorded fall back to their last snapshot, which is
    the first boundary after their last event: looser, but it still catches the TTL gap.
    """
    if "log_end_ms" in meta:
        return int(meta["log_end_ms"])
    snaps = meta.get("snapshots_ms") or []
    return int(snaps[-1]) if snaps else None


def uncovered(meta: dict[str, Any], at_ms: np.ndarray) -> np.ndarray:
    """Rows whose time is after the repo's log: their daily snapshots were never built."""
    end = log_end_ms(meta)
    at_ms = np.asarray(at_ms, dtype=np.int64)
    if end is None:
        return np.ones(len(at_ms), bool)
    return at_ms > end


def _when(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat(timespec="minutes")


def check_coverage(meta: dict[str, Any], at_ms: np.ndarray) -> None:
    """Raise :class:`StaleFeaturesError` naming the rows the repo cannot give features to."""
    bad = uncovered(meta, at_ms)
    if not bad.any():
        return
    end = log_end_ms(meta)
    late = np.asarray(at_ms, dtype=np.int64)[bad]
    built = "no batch build yet" if end is None else f"its log ends at {_when(end)}"
    raise StaleFeaturesError(
        f"{int(bad.sum()):,} of {len(bad):,} impressions ({_when(late.min())} .. "
        f"{_when(late.max())}) are after the feature repo's events ({built}): the daily "
        "snapshots they would have been served with were never built, and reading them would "
        "fill their batch features with defaults; rebuild the snapshots from a log that covers "
        "them (`reelrank rank` does, given the history) or pass a repo built from one"
    )


# --- online ------------------------------------------------------------------------------------


def _state_path(settings: Settings) -> Any:
    return repo_dir(settings) / MATERIALIZED_FILE


def newest_snapshots(settings: Settings, end: datetime) -> dict[str, int]:
    """Per batch view, the newest snapshot time (epoch ms) at or before ``end`` in its parquet
    file: what a materialization up to ``end`` puts into the online store."""
    from features.repo import TS_FIELD

    out: dict[str, int] = {}
    for view in BATCH_VIEWS:
        ts = pd.read_parquet(repo_dir(settings) / view.path, columns=[TS_FIELD])[TS_FIELD]
        ts = ts[ts <= pd.Timestamp(end)]
        if len(ts):
            out[view.name] = int(ts.max().value // 1_000_000)
    return out


def record_materialization(settings: Settings, end: datetime) -> dict[str, int]:
    """Write which snapshot each batch view now serves online (atomically); returns it."""
    snaps = newest_snapshots(settings, end)
    path = _state_path(settings)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"materialized_at": utcnow().isoformat(), "snapshots_ms": snaps}))
    os.replace(tmp, path)
    export_ages(settings)
    return snaps


def refresh_due_in(settings: Settings, now: datetime | None = None) -> float:
    """Seconds until the scheduled refresh is due: ``features_refresh_s`` after the last
    materialization, 0 when there is none (or it is that old). A worker restarted right after
    a build (a deploy, ``make demo``) waits instead of rebuilding what was just built."""
    path = _state_path(settings)
    try:
        at = datetime.fromisoformat(json.loads(path.read_text())["materialized_at"])
    except (OSError, ValueError, KeyError):
        return 0.0
    age = ((now or utcnow()) - at).total_seconds()
    return max(0.0, settings.features_refresh_s - age)


def view_ages(settings: Settings, now: datetime | None = None) -> dict[str, float]:
    """Seconds since each batch view's online snapshot; ``inf`` for a view never materialized."""
    path = _state_path(settings)
    snaps = json.loads(path.read_text())["snapshots_ms"] if path.is_file() else {}
    now_ms = (now or utcnow()).timestamp() * 1000
    return {
        v.name: (now_ms - snaps[v.name]) / 1000 if v.name in snaps else float("inf")
        for v in BATCH_VIEWS
    }


def is_stale(view: str, settings: Settings, now: datetime | None = None) -> bool:
    """Whether ``view``'s online values are older than its TTL (a degraded response).

    Views without a TTL (cumulative ones like ``user_creator``) and push views never are.
    """
    spec = VIEW_BY_NAME[view]
    if spec.push or not spec.ttl:
        return False
    return view_ages(settings, now)[view] > spec.ttl.total_seconds()


def stale_views(settings: Settings, now: datetime | None = None) -> list[str]:
    """The batch views :func:`is_stale` flags, for a response's degraded reasons."""
    return [v.name for v in BATCH_VIEWS if is_stale(v.name, settings, now)]


def export_ages(settings: Settings, now: datetime | None = None) -> dict[str, float]:
    """Set the ``reelrank_feature_view_age_seconds`` gauge per view; returns the ages."""
    ages = view_ages(settings, now)
    for name, age in ages.items():
        VIEW_AGE.labels(view=name).set(age)
    return ages
