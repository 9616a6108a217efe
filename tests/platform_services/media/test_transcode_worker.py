"""The transcode worker as a process: kill -9 mid-file and the video still ends ready exactly
once; a poison message is dead-lettered and the worker goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.config import Settings
from platform_services.bus.base import Message
from platform_services.bus.models import ProcessedEvent
from platform_services.bus.outbox import OutboxRelay
from platform_services.runtime import Runtime
from tests.platform_services.media.conftest import (
    clip,
    outbox,
    run_transcodes,
    upload,
    video_status,
)
from tests.serving.conftest import signup


def _relay(settings: Settings) -> None:
    async def main() -> None:
        rt = Runtime.from_settings(settings)
        try:
            await OutboxRelay(rt.sessions, rt.bus).run_once()
        finally:
            await rt.close()

    asyncio.run(main())


def test_kill_9_mid_transcode_still_ready_exactly_once(
    client: TestClient, settings: Settings, monkeypatch
) -> None:
    headers = signup(client, "kil")
    vid = upload(client, headers, clip("10034.mp4").read_bytes())  # the longest clip (7.6 s)
    _relay(settings)
    monkeypatch.setenv("REELRANK_TRANSCODE_SESSION_TIMEOUT_MS", "2000")
    proc = subprocess.Popen([sys.executable, "-c", "from core.cli import main; main()",
                             "worker", "transcode"],
                            env={**os.environ, "PYTHONPATH": "."}, cwd=Path.cwd(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = Path(settings.var_dir, "transcode", str(vid))
    try:
        deadline = time.monotonic() + 120
        while not list(work.glob("out/hls/*/seg_*.ts")):  # segments being written: mid-file
            assert proc.poll() is None and time.monotonic() < deadline, "never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert video_status(client, vid) == "processing", "no half-ready video after the crash"
    run_transcodes(settings, lambda: video_status(client, vid) != "processing")
    assert video_status(client, vid) == "ready"
    assert [e.status for e in outbox(client, "video.processed")] == ["ready"]
    with client.app.state.runtime.sessions() as s:
        n = s.scalar(select(func.count()).select_from(ProcessedEvent)
                     .where(ProcessedEvent.consumer == "transcode"))
    assert n == 1
    assert not client.app.state.blobs.exists(f"uploads/{vid}/source")


def test_poison_message_is_dead_lettered_and_work_goes_on(
    client: TestClient, settings: Settings
) -> None:
    headers = signup(client, "poi")

    async def publish() -> None:
        rt = Runtime.from_settings(settings)
        try:
            await rt.bus.ensure_topics(["video.uploaded"])
            await rt.bus.publish([Message("video.uploaded", "1", b"{not json")])
        finally:
            await rt.close()

    asyncio.run(publish())
    from tests.platform_services.media.conftest import cut

    data = cut(clip("carphone_distorted.mp4"), 2.5, Path(settings.var_dir) / "c.mp4")
    vid = upload(client, headers, data.read_bytes())
    run_transcodes(settings, lambda: video_status(client, vid) != "processing")
    assert video_status(client, vid) == "ready"

    async def dead() -> list[bytes]:
        rt = Runtime.from_settings(settings)
        consumer = rt.bus.consumer("inspect", ["video.uploaded.dlq"])
        await consumer.start()
        try:
            return [r.value for r in await consumer.poll(10, 500)]
        finally:
            await consumer.stop()
            await rt.close()

    letters = asyncio.run(dead())
    assert len(letters) == 1 and b"malformed JSON" in letters[0]
