"""The ``exposures`` worker: the experiment log the analysis reads.

It consumes ``experiment.exposure`` (one page a variant served: written to
``experiment_exposures`` under its experiment) and ``user.interaction`` (every outcome, written
to ``interaction_log``: the metrics after a user's first exposure, the CUPED covariates before
it). Exposures outside any experiment are not kept. The worker framework makes each event count
once (``processed_events`` in the same transaction; the rows' unique ``event_id`` besides) and
dead-letters what cannot be applied, e.g. an exposure naming an experiment that does not exist.
In the same transaction it recomputes the per-user metrics of every (experiment, user) the
batch can change (:func:`experiments.aggregates.refresh`): what the analysis reads.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.events import Event, ExperimentExposure, UserInteraction
from experiments import aggregates
from experiments.models import Experiment, Exposure, Interaction
from platform_services.bus.db_log import insert_ignore
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.runtime import Runtime

NAME = "exposures"
TOPICS = ("experiment.exposure", "user.interaction")
# After a short batch, wait this long for more (the framework's default is 50 ms). Each batch
# recomputes its users' metrics (a pandas pass per experiment, a few ms whatever its size), and
# nobody waits on this log by the second: at 40 first pages/s of the serving benchmark the
# worker took 2.2 ms of CPU a page in batches of one or two exposures.
LINGER_S = 0.5


class UnknownExperiment(ValueError):
    """An exposure logged under a name no experiment has (a poison message)."""


def apply_events(session: Session, events: list[Event]) -> None:
    """Write a batch of exposures and interactions in the caller's transaction."""
    exposures = [e for e in events if isinstance(e, ExperimentExposure) and e.experiment]
    names = {e.experiment for e in exposures}
    ids = dict(session.execute(select(Experiment.name, Experiment.id)
                               .where(Experiment.name.in_(names))).all()) if names else {}
    rows = []
    for e in exposures:
        if e.experiment not in ids:
            raise UnknownExperiment(f"exposure {e.event_id} names unknown experiment "
                                    f"{e.experiment!r}")
        rows.append({"event_id": str(e.event_id), "experiment_id": ids[e.experiment],
                     "variant": e.variant or "", "user_id": e.user_id,
                     "request_id": e.request_id, "occurred_at": e.occurred_at,
                     "n_items": len(e.video_ids), "first_position": e.first_position,
                     "latency_ms": e.latency_ms, "degraded": ",".join(e.degraded)[:200]})
    insert_ignore(session, Exposure, rows)
    interactions = [e for e in events if isinstance(e, UserInteraction)]
    insert_ignore(session, Interaction, [
        {"event_id": str(e.event_id), "user_id": e.user_id, "action": e.action.value,
         "video_id": e.video_id, "author_id": e.author_id, "watch_ms": e.watch_ms,
         "duration_ms": e.duration_ms, "occurred_at": e.occurred_at}
        for e in interactions])
    earliest: dict[int, int] = {}
    for e in (*exposures, *interactions):
        ms = int(e.occurred_at.timestamp() * 1000)
        earliest[e.user_id] = min(ms, earliest.get(e.user_id, ms))
    aggregates.refresh(session, earliest, {(ids[e.experiment], e.user_id) for e in exposures})


async def run(settings: Settings, stop: asyncio.Event, config: WorkerConfig | None = None) -> None:
    """``reelrank worker exposures``: consume until ``stop`` is set."""
    rt = Runtime.from_settings(settings)
    worker = Worker(NAME, TOPICS, apply_events, rt.bus, rt.sessions,
                    config or WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms,
                                           linger_s=LINGER_S))
    try:
        await worker.run(stop)
    finally:
        await rt.close()
