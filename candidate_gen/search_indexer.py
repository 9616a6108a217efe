"""``reelrank worker search`` and ``reelrank search reindex``: the search documents, with the
retriever's text encoder (all-MiniLM-L6-v2 from its wheel, :mod:`training.content`).

The worker consumes ``video.processed``, ``video.deleted`` and ``video.moderated`` and, in the
worker's transaction, re-reads each named video and upserts or deletes its document
(:func:`platform_services.search.documents.sync_videos`): the index follows the rows, exactly
once per event, and a poison message goes to its ``.dlq``. ``reindex`` rebuilds every document
from the database (after loading a data set's world, or to change the encoder).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import typer
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.events import Event, VideoDeleted, VideoModerated, VideoProcessed
from platform_services.search.documents import reindex, sync_videos

TOPICS = ("video.processed", "video.deleted", "video.moderated")
GROUP = "search"


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """MiniLM vectors, L2-normalised, [n, 384] (the retriever's content encoder)."""
    from training.content import text_embeddings

    return text_embeddings(list(texts))


def handle(session: Session, events: list[Event]) -> None:
    ids = [e.video_id for e in events
           if isinstance(e, VideoProcessed | VideoDeleted | VideoModerated)]
    sync_videos(session, ids, encode_texts)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    from platform_services.bus.worker import Worker, WorkerConfig
    from platform_services.runtime import Runtime
    from training.content import load_text_encoder

    await asyncio.to_thread(load_text_encoder)  # seconds: before the first event, not on it
    rt = Runtime.from_settings(settings)
    worker = Worker(GROUP, TOPICS, handle, rt.bus, rt.sessions,
                    WorkerConfig(max_batch=256,
                                 session_timeout_ms=settings.bus_session_timeout_ms))
    try:
        await worker.run(stop)
    finally:
        await rt.close()


def reindex_command(batch: int = typer.Option(512, min=1, max=10_000,
                                              help="Videos per transaction.")) -> None:
    """Rebuild every video's search document (text + MiniLM vector) from the database."""
    from platform_services.runtime import Runtime

    rt = Runtime.from_settings(get_settings())
    try:
        n = reindex(rt.sessions, encode_texts, batch,
                    progress=lambda k: typer.echo(f"indexed {k} searchable videos"))
        typer.echo(f"search index: {n} searchable videos")
    finally:
        asyncio.run(rt.close())


def register(groups: dict[str, typer.Typer]) -> None:
    groups["search"].command("reindex")(reindex_command)


def demo_step() -> None:
    reindex_command(512)
