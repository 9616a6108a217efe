"""Several transcode workers share the uploads over Kafka (the tansu broker): consumer group
``transcode`` splits ``video.uploaded``'s partitions between the members, every video is
transcoded by exactly one of them and ends ``ready`` exactly once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.events import Event
from platform_services.bus.models import ProcessedEvent
from platform_services.bus.outbox import OutboxRelay
from platform_services.bus.worker import WorkerConfig
from platform_services.media.pipeline import TranscodeJob
from platform_services.media.worker import moderators, transcode_worker
from platform_services.runtime import Runtime
from platform_services.storage.blobs import open_blob_store
from platform_services.storage.db import migrate
from serving.app import create_app
from tests.platform_services.media.conftest import clip, cut, outbox, upload
from tests.serving.conftest import signup

pytestmark = pytest.mark.timeout(600)
MEMBERS = 2
UPLOADS = 6


class CountingJob(TranscodeJob):
    """The real job, remembering which videos its member committed."""

    def __init__(self, *args, done: list[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.done = done

    def commit(self, session: Session, events: list[Event]) -> None:
        super().commit(session, events)
        self.done.extend(e.video_id for e in events)  # type: ignore[attr-defined]


def test_transcode_workers_share_uploads_over_kafka(
    settings: Settings, clean_env: pytest.MonkeyPatch, kafka_broker: str, tmp_path: Path
) -> None:
    clean_env.setenv("REELRANK_EVENT_BUS_URL", f"kafka://{kafka_broker}")
    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    with TestClient(create_app(settings, feed_services=False)) as api:
        headers = signup(api, "kafka")
        # Different lengths: different bytes, so each is a real transcode (no dedupe).
        ids = [upload(api, headers, cut(clip("carphone_distorted.mp4"), 1.0 + 0.3 * i,
                                        tmp_path / f"{i}.mp4").read_bytes(), title=f"clip {i}")
               for i in range(UPLOADS)]
    done: dict[int, list[int]] = defaultdict(list)

    async def main() -> None:
        rt = Runtime.from_settings(settings)
        consumers = []
        make = rt.bus.consumer

        def consumer(*args, **kwargs):  # noqa: ANN202 - keeps each member's consumer in sight
            consumers.append(make(*args, **kwargs))
            return consumers[-1]

        rt.bus.consumer = consumer  # type: ignore[method-assign]
        stop = asyncio.Event()
        config = WorkerConfig(max_batch=1, max_attempts=2, poll_timeout_ms=100,
                              session_timeout_ms=6000)
        members = [transcode_worker(settings, rt, config, CountingJob(
            settings, rt.sessions, open_blob_store(settings), moderators(settings),
            done=done[m])) for m in range(MEMBERS)]
        tasks = [asyncio.create_task(m.run(stop)) for m in members]
        try:
            async with asyncio.timeout(60):  # the group settles: each member holds partitions
                while len(consumers) < MEMBERS or not all(c.assignment() for c in consumers):
                    await asyncio.sleep(0.1)
            tasks.append(asyncio.create_task(
                OutboxRelay(rt.sessions, rt.bus).run(stop, idle_s=0.05)))
            async with asyncio.timeout(240):
                while sum(map(len, done.values())) < UPLOADS:
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # any duplicate delivery would land now
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rt.close()

    asyncio.run(main())
    assert sorted(v for vs in done.values() for v in vs) == sorted(ids), "each once, by one"
    assert all(done[m] for m in range(MEMBERS)), f"every member took a share: {dict(done)}"
    with TestClient(create_app(settings, feed_services=False)) as api:
        ready = [e.video_id for e in outbox(api, "video.processed") if e.status == "ready"]
        assert sorted(ready) == sorted(ids)
        with api.app.state.runtime.sessions() as s:
            n = s.scalar(select(func.count()).select_from(ProcessedEvent)
                         .where(ProcessedEvent.consumer == "transcode"))
        assert n == UPLOADS
        for vid in ids:
            assert api.get(f"/api/v1/videos/{vid}", headers=headers).json()["status"] == "ready"
