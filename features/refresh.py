"""``reelrank worker features-refresh``: the daily job, on a schedule.

Batch views are daily snapshots with a TTL: unless something rebuilds and re-materializes
them, a running platform's batch features age past their TTL and the online reader fills them
with defaults. Every ``features_refresh_s`` this worker

1. reads the data set ``features_refresh_dataset`` plus the platform's live interaction log
   (the ``interaction_log`` table the ``exposures`` worker fills from ``user.interaction``,
   when it exists), so the snapshots move forward with the app;
2. rebuilds every batch view's snapshots (:func:`features.batch.build_features`), writes
   them and applies the repo;
3. materializes the newest snapshot per entity up to now into the online store and records
   which snapshot each view serves (:func:`features.freshness.record_materialization`), which
   is what :func:`features.freshness.view_ages` / :func:`~features.freshness.is_stale` and
   the ``reelrank_feature_view_age_seconds`` gauge report.

A failed refresh is logged and retried at the next tick; the ages keep growing meanwhile, so a
broken refresh shows up as stale views, not as silent defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import pandas as pd

from core.clock import utcnow
from core.config import Settings

log = logging.getLogger(__name__)

LIVE_TABLE = "interaction_log"
# ``user.interaction`` actions -> the log's event names ``features.batch.prepare_log`` reads.
LIVE_EVENTS = {"view": "view", "watch": "watch", "like": "like", "unlike": "unlike",
               "share": "share", "comment": "comment", "skip": "skip"}


def live_interactions(settings: Settings) -> pd.DataFrame:
    """The live interaction log as canonical interaction rows (empty without the table)."""
    import sqlalchemy as sa

    from platform_services.storage.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        if not sa.inspect(engine).has_table(LIVE_TABLE):
            return pd.DataFrame()
        table = sa.Table(LIVE_TABLE, sa.MetaData(), autoload_with=engine)
        query = sa.select(table.c.user_id, table.c.video_id, table.c.action, table.c.watch_ms,
                          table.c.duration_ms, table.c.occurred_at).where(
            table.c.video_id.is_not(None), table.c.action.in_(list(LIVE_EVENTS)))
        with engine.connect() as conn:
            rows = pd.DataFrame(conn.execute(query).all(),
                                columns=["user_id", "item_id", "event", "watch_ms",
                                         "duration_ms", "ts"])
    finally:
        engine.dispose()
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    rows["event"] = rows["event"].map(LIVE_EVENTS)
    return rows


def refresh_once(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """One rebuild + materialization; returns what it did (rows, snapshot per view)."""
    from features.batch import build_features, write_features
    from features.cli import load_tables
    from features.freshness import view_ages
    from features.store import apply_repo, materialize_batch, repo_dir

    now = now or utcnow()
    tables = load_tables(settings.features_refresh_dataset)
    live = live_interactions(settings)
    if len(live):
        tables["interactions"] = pd.concat([tables["interactions"], live], ignore_index=True)
    feats = build_features(tables["interactions"], tables["items"], tables["users"],
                           tables.get("follows"))
    write_features(repo_dir(settings), feats)
    apply_repo(settings)
    rows = materialize_batch(settings, end=now)
    return {"live_events": len(live), "materialized_rows": rows,
            "age_s": view_ages(settings, now)}


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Entry point of ``reelrank worker features-refresh``: refresh when due (at once unless the
    last materialization is under ``features_refresh_s`` old), then every
    ``features_refresh_s`` until ``stop``."""
    from features.freshness import refresh_due_in

    wait = refresh_due_in(settings)
    if wait > 0:
        log.info("features materialized recently: first refresh in %.0f s", wait)
    while True:
        with contextlib.suppress(TimeoutError):  # the wait passed without a stop
            await asyncio.wait_for(stop.wait(), timeout=wait)
        if stop.is_set():
            return
        try:
            done = await asyncio.to_thread(refresh_once, settings)
            log.info("features refreshed: %s", done)
        except Exception:  # the next tick retries; the view ages say it is failing
            log.exception("feature refresh failed; retrying in %.0f s",
                          settings.features_refresh_s)
        wait = settings.features_refresh_s
