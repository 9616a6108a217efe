"""The wiring a platform process needs: engine, sessions and bus, built from Settings.

The ``relay`` and ``counters`` workers live here. Every worker (``reelrank worker NAME``) is
an ``async def run(settings, stop)``, listed in ``WORKERS`` of :mod:`core.cli`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from platform_services import counters
from platform_services.bus import EventBus, open_bus
from platform_services.bus.outbox import OutboxRelay
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.storage.db import make_engine, session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    bus: EventBus

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                             max_overflow=settings.database_max_overflow)
        return cls(
            settings, engine, session_factory(engine), open_bus(settings.event_bus_url, engine)
        )

    async def close(self) -> None:
        await self.bus.stop()
        self.engine.dispose()


async def run_relay(settings: Settings, stop: asyncio.Event) -> None:
    rt = Runtime.from_settings(settings)
    try:
        await OutboxRelay(rt.sessions, rt.bus).run(stop)
    finally:
        await rt.close()


async def run_counters(
    settings: Settings, stop: asyncio.Event, config: WorkerConfig | None = None
) -> None:
    rt = Runtime.from_settings(settings)
    worker = Worker(
        "counters",
        counters.TOPICS,
        counters.apply_counts,
        rt.bus,
        rt.sessions,
        config or WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms),
    )
    try:
        await worker.run(stop)
    finally:
        await rt.close()
