"""Media fixtures: the real clips, an API client on either blob backend, and bus helpers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.config import Settings, get_settings
from core.events import Event, decode
from platform_services.bus.models import OutboxRow
from platform_services.storage.blobs import S3BlobStore, open_blob_store
from platform_services.storage.db import migrate
from serving.app import create_app

CLIPS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "videos"
if not CLIPS.is_dir():  # a worktree sits beside main; the data is beside both
    CLIPS = Path("/work/shared/data/videos")


def clip(name: str) -> Path:
    """A real clip from the shared data folder, or skip saying where it was looked for."""
    path = CLIPS / name
    if not path.is_file():
        pytest.skip(f"real clip {name} not found under {CLIPS} (see ../shared/data/README.md)")
    return path


@pytest.fixture(params=["local", "s3"])
def media_settings(request: pytest.FixtureRequest, settings: Settings,
                   clean_env: pytest.MonkeyPatch) -> Settings:
    """The test settings on the local blob store, then on S3 (moto's server)."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        clean_env.setenv("REELRANK_BLOB_URL", f"s3://media-{uuid.uuid4().hex[:10]}")
        clean_env.setenv("REELRANK_S3_ENDPOINT_URL", endpoint)
        get_settings.cache_clear()
        settings = get_settings()
        store = open_blob_store(settings)
        assert isinstance(store, S3BlobStore)
        store.create_bucket()
    migrate(settings.database_url)
    return settings


@pytest.fixture
def api(media_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(media_settings, feed_services=False)) as c:
        yield c


def http(client: TestClient, method: str, url: str, **kwargs) -> httpx.Response:
    """Follow a pre-signed URL: the app's own routes through the test client, S3 over HTTP."""
    u = urlsplit(url)
    if u.netloc == urlsplit(str(client.app.state.runtime.settings.api_base_url)).netloc:
        return client.request(method, f"{u.path}?{u.query}" if u.query else u.path, **kwargs)
    return httpx.request(method, url, **kwargs)


def outbox(client: TestClient, topic: str | None = None) -> list[Event]:
    with client.app.state.runtime.sessions() as s:
        rows = s.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    events = [decode(r.value) for r in rows]
    return [e for e in events if topic is None or e.topic == topic]


def upload(client: TestClient, headers: dict[str, str], data: bytes, **meta) -> int:
    """Create, PUT and complete an upload; the video id."""
    body = {"title": "a clip", **meta}
    r = client.post("/api/v1/videos/upload", json=body, headers=headers)
    assert r.status_code == 201, r.text
    ticket = r.json()
    put = http(client, "PUT", ticket["upload_url"], content=data,
               headers={"Content-Type": ticket["content_type"]})
    assert put.status_code == 200, put.text
    r = client.post(f"/api/v1/videos/{ticket['video_id']}/complete", headers=headers)
    assert r.status_code == 202, r.text
    return ticket["video_id"]


def cut(src: Path, seconds: float, dst: Path) -> Path:
    """The first ``seconds`` of ``src``, stream-copied (no re-encode): short transcodes."""
    import av

    # faststart: the index (moov) first, as phones write it, so half a file still opens.
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4",
                                           options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s)
                   for s in (*inp.streams.video[:1], *inp.streams.audio[:1])}
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's flush packets
            if float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def run_transcodes(settings: Settings, until, timeout_s: float = 180.0,
                   workers: int = 1, downstream: Sequence[Callable[..., Any]] = ()) -> None:
    """Relay the outbox and run ``workers`` transcode workers, and a worker made by each of
    ``downstream`` (``(settings, runtime, config)``: the embed worker), until ``until()``."""
    import asyncio

    from platform_services.bus.outbox import OutboxRelay
    from platform_services.bus.worker import WorkerConfig
    from platform_services.media.worker import transcode_worker
    from platform_services.runtime import Runtime

    async def main() -> None:
        rt = Runtime.from_settings(settings)
        stop = asyncio.Event()
        config = WorkerConfig(max_batch=1, max_attempts=2, poll_timeout_ms=100,
                              session_timeout_ms=3000)
        members = [transcode_worker(settings, rt, config) for _ in range(workers)]
        members += [make(settings, rt, config) for make in downstream]

        async def watch() -> None:
            try:
                while not await asyncio.to_thread(until):
                    await asyncio.sleep(0.2)
            finally:
                stop.set()

        try:
            await asyncio.wait_for(asyncio.gather(
                OutboxRelay(rt.sessions, rt.bus).run(stop, idle_s=0.05),
                *(m.run(stop) for m in members), watch()), timeout_s)
        finally:
            await rt.close()

    asyncio.run(main())


def video_status(client: TestClient, video_id: int) -> str:
    from platform_services.storage.models import Video

    with client.app.state.runtime.sessions() as s:
        return s.get(Video, video_id).status.value


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API on the embedded defaults only (local blobs, the db-log bus)."""
    migrate(settings.database_url)
    with TestClient(create_app(settings, feed_services=False)) as c:
        yield c
