"""Search documents from the database: what a video's document holds and when it exists.

A video is searchable when it is ready, approved by moderation and public (followers-only and
private videos are never in the index, so no query can leak them). :func:`sync_videos`
re-reads the named videos and upserts or deletes their documents: the ``search`` worker calls
it for each batch of ``video.processed`` / ``video.deleted`` / ``video.moderated`` events
inside the worker's transaction, and ``reelrank search reindex`` calls it for every video.
Texts are embedded by the ``encode`` function passed in (the retriever's MiniLM encoder; this
package does not load models).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from platform_services.media.models import VideoMedia
from platform_services.search.models import SearchEmbedding, SearchVideo
from platform_services.storage.db import upsert_insert
from platform_services.storage.models import Moderation, User, Video, VideoStatus, Visibility

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> [n, d] L2-normalised float32
_HASHTAG = re.compile(r"#(\w+)")


def searchable(video: Video) -> bool:
    return (video.status == VideoStatus.READY and video.moderation == Moderation.APPROVED
            and video.visibility == Visibility.PUBLIC)


def document_text(title: str, description: str, tags: Sequence[str]) -> str:
    """What the semantic half embeds: the same text shape the retriever's encoder reads."""
    return " ".join(p for p in (title.strip(), description.strip(),
                                " ".join(f"#{t}" for t in tags)) if p)


def _tags(video: Video, media_tags: Sequence[str] | None) -> list[str]:
    found = _HASHTAG.findall(f"{video.title} {video.description or ''}")
    return list(dict.fromkeys(t.lower() for t in [*(media_tags or []), *found] if t))


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, np.float16).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, np.float16).astype(np.float32)


def sync_videos(session: Session, video_ids: Sequence[int], encode: Encoder | None) -> int:
    """Bring the documents of ``video_ids`` in line with their rows; returns how many are
    searchable now. Runs in the caller's transaction."""
    ids = sorted({int(v) for v in video_ids})
    if not ids:
        return 0
    rows = session.execute(
        select(Video, User.username, User.display_name, VideoMedia.tags)
        .join(User, User.id == Video.owner_id)
        .outerjoin(VideoMedia, VideoMedia.video_id == Video.id)
        .where(Video.id.in_(ids))).all()
    docs = []
    for video, username, display_name, media_tags in rows:
        if not searchable(video):
            continue
        tags = _tags(video, media_tags)
        docs.append({
            "video_id": video.id, "owner_id": video.owner_id, "title": video.title[:200],
            "description": video.description or "", "tags": " ".join(tags),
            "creator": f"{username} {display_name or ''}".strip()[:200],
            "category": video.category, "duration_ms": video.duration_ms,
            "created_at": video.created_at,
            "_text": document_text(video.title, video.description or "", tags)})
    keep = {d["video_id"] for d in docs}
    if gone := [v for v in ids if v not in keep]:
        session.execute(delete(SearchVideo).where(SearchVideo.video_id.in_(gone)))
    if docs:
        texts = [d.pop("_text") for d in docs]
        vectors = encode(texts) if encode else None
        now = utcnow()
        for d in docs:
            d["indexed_at"] = now
        _upsert(session, SearchVideo, docs)
        if vectors is not None:
            _upsert(session, SearchEmbedding, [
                {"video_id": d["video_id"], "embedding": to_blob(v), "indexed_at": now}
                for d, v in zip(docs, vectors, strict=True)])
        else:  # no encoder: a vector of the old text would rank the new one
            session.execute(delete(SearchEmbedding).where(
                SearchEmbedding.video_id.in_([d["video_id"] for d in docs])))
    return len(docs)


def _upsert(session: Session, table: type[SearchVideo | SearchEmbedding], rows: list[dict]) -> None:
    stmt = upsert_insert(session, table)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["video_id"],
        set_={c: stmt.excluded[c] for c in rows[0] if c != "video_id"}), rows)


def reindex(session_factory: sessionmaker[Session], encode: Encoder | None, batch: int = 512,
            progress: Callable[[int], None] | None = None) -> int:
    """Every video's document rebuilt from the database, ``batch`` videos per transaction."""
    last, total = 0, 0
    while True:
        with session_factory.begin() as session:
            ids = list(session.scalars(select(Video.id).where(Video.id > last)
                                       .order_by(Video.id).limit(batch)))
            if not ids:
                return total
            total += sync_videos(session, ids, encode)
        last = ids[-1]
        if progress is not None:
            progress(total)
