"""The web player's test bed: a small synthetic world whose videos play a real HLS ladder (a
generated clip through the platform's own transcoder), the API with its feed on a real
uvicorn server, and Debian's Chromium driven by Playwright.

No models are trained: the feed ranks by its fallback (``fallback:cheap-score``) and says so,
which is what a fresh install serves until ``make demo`` has trained them; the player and its
debug overlay show that just the same.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import pytest
import redis
import uvicorn
from PIL import Image, ImageDraw
from sqlalchemy import select

from core.cli import WORKERS, resolve
from core.clock import utcnow
from core.config import Settings
from experiments import store
from experiments.spec import parse_spec
from platform_services.media.models import VideoMedia
from platform_services.media.probe import probe
from platform_services.media.transcode import ladder, transcode
from platform_services.search.documents import reindex
from platform_services.storage.blobs import open_blob_store
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import Video, VideoStatus
from serving import demo
from serving.app import create_app
from tests.isolation import env_settings
from training.datasets.store import load_dataset, write_dataset
from training.datasets.synth import SynthConfig, generate, recent_start
from training.datasets.world import load_world

SHARED_LADDER = "ladders/web-test/"  # one real ladder every test video points at
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """``REELRANK_CHROMIUM``, else the first Chromium on PATH (Debian's ``chromium``)."""
    explicit = os.environ.get("REELRANK_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def make_clip(path: Path, seconds: float = 3.0, fps: int = 24) -> Path:
    """A portrait H.264 clip (a moving bar over a gradient) to feed the transcoder."""
    w, h = 360, 640
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        base = np.zeros((h, w, 3), np.uint8)
        base[..., 0] = np.linspace(30, 200, h, dtype=np.uint8)[:, None]
        base[..., 2] = np.linspace(200, 30, w, dtype=np.uint8)[None, :]
        for i in range(int(seconds * fps)):
            frame = base.copy()
            y = int(i / (seconds * fps) * (h - 40))
            frame[y:y + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def poster(video_id: int, title: str) -> bytes:
    """A distinct JPEG thumbnail per video (its id and title drawn on it)."""
    img = Image.new("RGB", (270, 480), ((video_id * 53) % 200, (video_id * 97) % 200, 120))
    draw = ImageDraw.Draw(img)
    draw.text((12, 200), f"video {video_id}", fill="white")
    draw.text((12, 220), title[:40], fill="white")
    buf = BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def store_media(settings: Settings, work: Path, source: Path | None = None) -> int:
    """Transcode ``source`` (default: a generated clip) with the platform's transcoder into a
    shared ladder and point every ready video at it, each with its own thumbnail: what the
    transcode worker leaves behind (``video_media`` row, playlists and segments, artwork)."""
    src = source or make_clip(work / "clip.mp4")
    p = probe(src)
    result = transcode(src, work / "out", p, ladder(p, [360]), 2.0, preset="ultrafast",
                       threads=1)
    blobs, engine = open_blob_store(settings), make_engine(settings.database_url)
    for f in result.files:
        blobs.put(SHARED_LADDER + f.relative_to(work / "out").as_posix(), f.read_bytes())
    n = 0
    with session_factory(engine).begin() as s:
        for vid, title in s.execute(select(Video.id, Video.title)
                                    .where(Video.status == VideoStatus.READY)):
            s.add(VideoMedia(video_id=vid, content_type="video/mp4",
                             source_key=f"uploads/{vid}/source", upload_expires_at=utcnow(),
                             media_prefix=SHARED_LADDER, renditions=result.renditions))
            blobs.put(f"videos/{vid}/thumbnail.jpg", poster(vid, title or ""), "image/jpeg")
            n += 1
    reindex(session_factory(engine), None)  # lexical search documents (no encoder here)
    engine.dispose()
    return n


EXPERIMENT = "web-explore"


def start_experiment(settings: Settings) -> None:
    """A running A/B test every new user is in (control, or more exploration slots), so the
    debug overlay has an experiment variant to show."""
    engine = make_engine(settings.database_url)
    with session_factory(engine).begin() as s:
        store.create(s, parse_spec({"name": EXPERIMENT, "variants": [
            {"name": "control", "weight": 50},
            {"name": "explore", "weight": 50, "explore_slots": 0.3}]}), lambda *_: None)
        store.start(s, EXPERIMENT)
    engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What the page's upload, follow and badge need.
WORKER_NAMES = ("relay", "transcode", "fanout", "notifications")


@contextmanager
def running_workers(settings: Settings, names: tuple[str, ...] = WORKER_NAMES) -> Iterator[None]:
    """``reelrank worker NAME`` for each name, as tasks of one event loop on a thread (what
    ``make demo`` runs as processes): the outbox relayed to the bus and consumed for real."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        await asyncio.gather(*(resolve(WORKERS[n])(settings, stop) for n in names))

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),),
                              name="web-test-workers", daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@dataclass
class LiveApi:
    """The API on a real port, and the settings it runs on."""

    url: str
    settings: Settings


@pytest.fixture(scope="module")
def live_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """World + media + uvicorn on a free port, for the module; stopped afterwards."""
    if chromium_path() is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome on PATH, or "
                    "REELRANK_CHROMIUM): `make test` installs Debian's chromium package")
    root = tmp_path_factory.mktemp("web")  # kept to the end: the API's daemon threads read it
    url = redis_url + "?db=12"  # a database no other test module uses
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "ENV": "test", "JWT_SECRET": "test-secret-of-at-least-32-bytes!!",
        "VAR_DIR": str(root), "DATA_DIR": str(root / "data"),
        "DATABASE_URL": f"sqlite:///{root}/reelrank.db", "REDIS_URL": url,
        "BLOB_URL": f"file://{root}/blobs", "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "RANKER_BACKEND": "local", "CATALOG_REFRESH_S": "0.5", "API_BASE_URL": base,
        "RATE_LIMIT_LOGIN": "10000/minute", "RATE_LIMIT_SIGNUP": "10000/minute",
        # The overlay is tried by the user each test signs up (staff only by default outside
        # dev: the refusal is in tests/serving/social/test_security_rules.py).
        "FEED_DEBUG_ROLE": "user",
    }
    with env_settings(env) as settings:
        cfg = SynthConfig(n_users=60, n_videos=150, days=3, seed=11, start=recent_start(3))
        write_dataset(demo.DATASET, generate(cfg), "synth", root=settings.data_dir)
        migrate(settings.database_url)
        load_world(settings, load_dataset(demo.DATASET, settings.data_dir))
        store_media(settings, root)
        start_experiment(settings)
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1",
                                               port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, name="web-test-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        try:
            with running_workers(settings):
                yield LiveApi(base, settings)
        finally:
            server.should_exit = True
            thread.join(30)


@pytest.fixture(scope="module")
def browser(live_api: LiveApi) -> Iterator[object]:
    """Headless Chromium (the system's; Playwright never downloads one here)."""
    from playwright.sync_api import sync_playwright  # a dev dependency: `make test` has it

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                               args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield b
        finally:
            b.close()
