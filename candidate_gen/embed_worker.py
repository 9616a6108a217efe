"""``reelrank worker embed``: a brand-new video's content embedding and item-tower vector.

On ``video.processed`` (status ready) for an uploaded video, the worker reads its title,
description and hashtags and its poster, runs both offline encoders
(:class:`training.content.VideoContentEncoder`: all-MiniLM-L6-v2 + EfficientNet-Lite0, or an
open_clip image tower when ``content_clip_checkpoint`` is set) and the item tower of the
retrieval champion, and stores both in ``video_media`` (:mod:`candidate_gen.fresh_items`). The
API's catalog refresh then adds the stored vector to the ANN index, so the video is a
candidate within about one ``catalog_refresh_s`` of the worker's commit.

The encoders and the model load when the worker starts (seconds), not on the first video; the
champion is re-resolved every ``model_poll_s`` so a moved alias is followed. The slow part runs
outside the transaction (:class:`~platform_services.media.worker.PreparedWorker`); a message
that keeps failing goes to ``video.processed.dlq`` and the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Histogram
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from candidate_gen.fresh_items import (
    expected_image_encoder,
    items_frame,
    pack,
    tower_content,
)
from core.config import Settings
from core.events import Event, VideoProcessed
from platform_services.bus.worker import WorkerConfig
from platform_services.media.models import VideoMedia
from platform_services.media.uploads import video_prefix
from platform_services.media.worker import PreparedWorker
from platform_services.runtime import Runtime
from platform_services.storage.blobs import BlobNotFoundError, BlobStore, open_blob_store
from platform_services.storage.models import Video, VideoStatus
from training import registry
from training.content import VideoContentEncoder, video_text
from training.retrieval.bundle import Bundle

log = logging.getLogger(__name__)
TOPICS = ("video.processed",)
GROUP = "embed"
SECONDS = Histogram("reelrank_embed_seconds", "Encoders + item tower for one new video",
                    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))


@dataclass
class Embedded:
    content: np.ndarray
    encoder: str
    vector: np.ndarray | None
    model: str | None


class Champion:
    """The retrieval version behind ``uri``, re-resolved at most every ``poll_s``."""

    def __init__(self, uri: str, poll_s: float) -> None:
        self.uri, self.poll_s = uri, poll_s
        self.bundle: Bundle | None = None
        self.version: str | None = None
        self._checked = -float("inf")

    def get(self) -> tuple[Bundle, str] | None:
        if time.monotonic() - self._checked >= self.poll_s:
            self._checked = time.monotonic()
            try:
                v = registry.resolve(self.uri)
                name = f"{v.name}/{v.version}"
                if name != self.version:
                    self.bundle, _ = registry.load_bundle(f"models:/{name}", Bundle)
                    self.version = name
                    log.info("embed: item tower of %s", name)
            except registry.ModelNotFound as exc:
                log.warning("embed: no retrieval model (%s); storing content only", exc)
        return (self.bundle, self.version) if self.bundle and self.version else None


class EmbedJob:
    """Prepare (encoders + tower, outside the transaction), commit (store), as the transcode
    job does."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 blobs: BlobStore) -> None:
        self.settings, self.sessions, self.blobs = settings, sessions, blobs
        uri = settings.retrieval_model
        if not uri.startswith("models:/"):
            uri = f"models:/{uri}@champion"
        registry.connect(settings.mlflow_tracking_uri)
        self.champion = Champion(uri, settings.model_poll_s)
        self._encoder: VideoContentEncoder | None = None
        self.pending: dict[str, Embedded] = {}

    def warm(self) -> None:
        """Load the encoders and the champion now (seconds), not on the first video."""
        self.encoder()
        self.champion.get()

    def encoder(self) -> VideoContentEncoder:
        if self._encoder is None:
            self._encoder = VideoContentEncoder.load(self.settings.content_clip_checkpoint,
                                                     self.settings.content_clip_model)
        return self._encoder

    def prepare(self, event: Event) -> None:
        if not isinstance(event, VideoProcessed) or event.status != "ready":
            return
        with self.sessions() as s:
            row = s.execute(select(Video, VideoMedia).join(
                VideoMedia, VideoMedia.video_id == Video.id).where(Video.id == event.video_id)
            ).first()
            if row is None or row[0].status != VideoStatus.READY:
                return  # a data-set video, or failed / removed since
            video, media = row
            text = video_text(video.title, video.description or "", list(media.tags))
            meta = (video.id, video.owner_id, video.title, video.duration_ms or -1,
                    int(video.created_at.timestamp() * 1000), video.category)
        started = time.perf_counter()
        enc = self.encoder()
        with tempfile.TemporaryDirectory() as tmp:
            poster: Path | None = Path(tmp) / "poster.jpg"
            try:
                self.blobs.download(f"{video_prefix(event.video_id)}poster.jpg", poster)
            except BlobNotFoundError:
                poster = None  # text only; the image part stays zero
            content = enc.encode(text, poster)
        out = Embedded(content, enc.name, None, None)
        champion = self.champion.get()
        if champion is not None:
            bundle, version = champion
            vid, owner, title, dur, created, category = meta
            items = items_frame(np.array([vid]), np.array([owner]), [title], np.array([dur]),
                                np.array([created]), [category])
            cdim = bundle.model.cfg.content_dim
            tower_in = (tower_content(content, enc.name, cdim,
                                      expected_image_encoder(bundle.meta, cdim))[None]
                        if cdim else None)
            out.vector = bundle.vectors_for_items(items, tower_in)[0]
            out.model = version
        SECONDS.observe(time.perf_counter() - started)
        self.pending[str(event.event_id)] = out

    def commit(self, session: Session, events: list[Event]) -> None:
        for event in events:
            out = self.pending.get(str(event.event_id))
            if out is None:
                continue
            assert isinstance(event, VideoProcessed)
            session.execute(update(VideoMedia).where(VideoMedia.video_id == event.video_id)
                            .values(content_embedding=pack(out.content),
                                    content_encoder=out.encoder,
                                    item_vector=None if out.vector is None else pack(out.vector),
                                    item_vector_model=out.model))

    def finish(self, event: Event, committed: bool) -> None:
        self.pending.pop(str(event.event_id), None)


def embed_worker(settings: Settings, rt: Runtime, config: WorkerConfig | None = None,
                 job: EmbedJob | None = None) -> PreparedWorker:
    job = job or EmbedJob(settings, rt.sessions, open_blob_store(settings))
    config = config or WorkerConfig(max_batch=50, max_attempts=3)
    return PreparedWorker(GROUP, TOPICS, job.commit, rt.bus, rt.sessions, config,
                          prepare=job.prepare, finish=job.finish)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    rt = Runtime.from_settings(settings)
    try:
        job = EmbedJob(settings, rt.sessions, open_blob_store(settings))
        await asyncio.to_thread(job.warm)
        await embed_worker(settings, rt, job=job).run(stop)
    finally:
        await rt.close()
