"""The ``exposures`` worker end to end on the db:// bus: the feed's outbox -> relay -> worker
-> the tables the analysis reads; duplicates applied once, poison dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time

from sqlalchemy import func, select

from core.config import Settings
from core.events import Action, ExperimentExposure, UserInteraction, encode
from experiments import exposures, store
from experiments.models import Exposure, Interaction
from experiments.spec import parse_spec
from platform_services.bus import Message
from platform_services.bus.outbox import OutboxRelay, emit
from platform_services.bus.worker import WorkerConfig
from platform_services.runtime import Runtime

FAST = WorkerConfig(poll_timeout_ms=100, backoff_s=0.01, session_timeout_ms=6_000)


def count(rt: Runtime, model: type) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


async def test_exposure_log_end_to_end(exp_settings: Settings) -> None:
    rt = Runtime.from_settings(exp_settings)
    try:
        with rt.sessions.begin() as s:
            store.create(s, parse_spec({"name": "e2e", "variants": [
                {"name": "control", "weight": 50}, {"name": "t", "weight": 50,
                                                    "explore_slots": 0.3}]}),
                lambda *_: None)
            store.start(s, "e2e")
        pages = [ExperimentExposure(user_id=u, request_id=f"r{u}", experiment="e2e",
                                    variant="t" if u % 2 else "control", video_ids=[1, 2, 3],
                                    latency_ms=12.5, degraded=["ranker"] if u == 3 else [])
                 for u in range(1, 21)]
        outside = ExperimentExposure(user_id=99, request_id="x", video_ids=[4])  # no experiment
        watches = [UserInteraction(user_id=u, action=Action.WATCH, video_id=1, watch_ms=900)
                   for u in range(1, 21)]
        with rt.sessions.begin() as s:  # as the feed and POST /events write them
            emit(s, *pages, outside, *watches)
        assert await OutboxRelay(rt.sessions, rt.bus).run_once() == 41
        poison = ExperimentExposure(user_id=5, request_id="p", experiment="no-such",
                                    variant="t", video_ids=[1])
        await rt.bus.publish([
            Message(pages[0].topic, "1", b"{not json"),
            Message(poison.topic, poison.key, encode(poison)),
            *(Message(e.topic, e.key, encode(e)) for e in pages[:5] + watches[:5]),  # again
        ])
        stop = asyncio.Event()
        task = asyncio.create_task(exposures.run(exp_settings, stop, FAST))
        deadline = time.monotonic() + 60
        while count(rt, Exposure) < 20 or count(rt, Interaction) < 20:
            assert time.monotonic() < deadline and not task.done(), "worker fell behind"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the duplicates and the poison go through
        stop.set()
        await asyncio.wait_for(task, 30)

        assert count(rt, Exposure) == 20 and count(rt, Interaction) == 20
        with rt.sessions() as s:
            exp = store.get(s, "e2e")
            rows = s.scalars(select(Exposure).where(Exposure.user_id == 3)).all()
            assert [(r.variant, r.latency_ms, r.degraded, r.n_items) for r in rows] == [
                ("t", 12.5, "ranker", 3)]
            counts = {c.variant: c.users for c in store.exposure_counts(s, exp)}
        assert counts == {"control": 10, "t": 10}
        consumer = rt.bus.consumer("dlq-reader", ["experiment.exposure.dlq"])
        await consumer.start()
        dead = []
        for _ in range(50):
            dead += await consumer.poll(100, 100)
            if len(dead) >= 2:
                break
        await consumer.stop()
        reasons = sorted(json.loads(r.value)["error"] for r in dead)
        assert len(dead) == 2, reasons
        assert any("malformed JSON" in r for r in reasons)
        assert any("unknown experiment 'no-such'" in r for r in reasons)
    finally:
        await rt.close()
