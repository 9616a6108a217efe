"""``reelrank worker transcode``: members of consumer group ``transcode`` share
``video.uploaded`` by partition (several processes, on one machine or many).

The bus framework's :class:`~platform_services.bus.worker.Worker` applies handlers inside a
transaction; a transcode takes seconds, so :class:`PreparedWorker` runs each event's heavy
``prepare`` first, outside it, then the framework's usual transaction (idempotency row + the
handler's writes + outbox), then ``finish``. Retries and dead-lettering are the framework's:
an event that keeps raising goes to ``video.uploaded.dlq`` and the worker goes on.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from core.config import Settings
from core.events import Event
from platform_services.bus.models import ProcessedEvent
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.media.moderation import Moderator, TextRules
from platform_services.media.pipeline import TranscodeJob
from platform_services.runtime import Runtime
from platform_services.storage.blobs import open_blob_store

TOPICS = ("video.uploaded",)
GROUP = "transcode"


@dataclass
class PreparedWorker(Worker):
    """A worker whose events need slow work before their transaction (one at a time)."""

    prepare: Callable[[Event], None] = field(default=lambda e: None)
    finish: Callable[[Event, bool], None] = field(default=lambda e, committed: None)

    def _apply(self, events: list[Event]) -> None:
        for event in events:
            with self.sessions() as s:
                done = s.scalar(select(ProcessedEvent.event_id).where(
                    ProcessedEvent.consumer == self.name,
                    ProcessedEvent.event_id == str(event.event_id)))
            if done is not None:
                super()._apply([event])  # counts it as a skipped duplicate
                continue
            committed = False
            try:
                self.prepare(event)
                super()._apply([event])
                committed = True
            finally:
                self.finish(event, committed)


def moderators(settings: Settings) -> list[Moderator]:
    """The text rules, then the frame moderator ``media_frame_moderator`` names
    (``"module:factory"``, called with the settings; empty: none). It is named, not imported,
    because the default is built on encoders that live above this package."""
    out: list[Moderator] = [TextRules()]
    if settings.media_frame_moderator:
        module, _, factory = settings.media_frame_moderator.partition(":")
        out.append(getattr(importlib.import_module(module), factory)(settings))
    return out


def transcode_worker(settings: Settings, rt: Runtime, config: WorkerConfig | None = None,
                     job: TranscodeJob | None = None) -> PreparedWorker:
    job = job or TranscodeJob(settings, rt.sessions, open_blob_store(settings),
                              moderators(settings))
    config = config or WorkerConfig(max_batch=1, max_attempts=2,
                                    session_timeout_ms=settings.transcode_session_timeout_ms)
    return PreparedWorker(GROUP, TOPICS, job.commit, rt.bus, rt.sessions, config,
                          prepare=job.prepare, finish=job.finish)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    rt = Runtime.from_settings(settings)
    try:
        await transcode_worker(settings, rt).run(stop)
    finally:
        await rt.close()
