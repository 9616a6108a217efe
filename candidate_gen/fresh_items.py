"""Vectors of brand-new uploads: what the embed worker stores and the ANN index reads back.

The embed worker (:mod:`candidate_gen.embed_worker`) writes, per uploaded video, the offline
encoders' content row (``[text 384 | image D]``, :class:`training.content.VideoContentEncoder`)
and the item-tower vector of the retrieval champion into ``video_media``.
:meth:`candidate_gen.ann.AnnRetriever.sync` then adds the stored vector as it is when it
serves that version, runs only its own item tower on the stored content when it serves another
(a challenger), and never loads an encoder for an upload that has either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from platform_services.media.models import VideoMedia
from training.content import EFFNET_NAME, TEXT_DIM

EFFNET_DIM = 1280
_CHUNK = 500  # ids per IN (...) query


def pack(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, np.float32).tobytes()


def unpack(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, np.float32).copy()


@dataclass(frozen=True)
class Stored:
    """What ``video_media`` holds for one uploaded video (``None``: not computed yet)."""

    ready_ms: int | None
    content: np.ndarray | None
    encoder: str | None  # "minilm-l6-64+effnet-lite0"
    vector: np.ndarray | None
    vector_model: str | None  # "reelrank-retrieval/3"


def load_stored(sessions: sessionmaker[Session], ids: Sequence[int]) -> dict[int, Stored]:
    """The uploads among ``ids`` and what is stored for them; data-set videos have no row."""
    out: dict[int, Stored] = {}
    ids = [int(i) for i in ids]
    with sessions() as s:
        for start in range(0, len(ids), _CHUNK):
            rows = s.execute(select(
                VideoMedia.video_id, VideoMedia.ready_at, VideoMedia.content_embedding,
                VideoMedia.content_encoder, VideoMedia.item_vector, VideoMedia.item_vector_model,
            ).where(VideoMedia.video_id.in_(ids[start : start + _CHUNK]))).all()
            for r in rows:
                ready = int(r.ready_at.timestamp() * 1000) if r.ready_at is not None else None
                out[r.video_id] = Stored(ready, unpack(r.content_embedding), r.content_encoder,
                                         unpack(r.item_vector), r.item_vector_model)
    return out


def expected_image_encoder(meta: dict, content_dim: int) -> str | None:
    """The image encoder a retrieval version's content was trained with (None: no image part).
    Older versions do not record it; a 1280-wide image part is then EfficientNet-Lite0's."""
    if content_dim <= TEXT_DIM:
        return None
    named = meta.get("image_encoder")
    if named:
        return str(named)
    return EFFNET_NAME if content_dim - TEXT_DIM == EFFNET_DIM else None


def tower_content(content: np.ndarray, encoder: str | None, content_dim: int,
                  image_encoder: str | None) -> np.ndarray:
    """A stored content row cut to what one tower reads: the text part always; the image part
    only when it came from the encoder the tower was trained with (else zeros, which the tower
    saw in training for items without a thumbnail)."""
    out = np.zeros(content_dim, np.float32)
    n_text = min(TEXT_DIM, content_dim, len(content))
    out[:n_text] = content[:n_text]
    stored_image = (encoder or "").partition("+")[2]
    if (content_dim > TEXT_DIM and image_encoder is not None and stored_image == image_encoder
            and len(content) == content_dim):
        out[TEXT_DIM:] = content[TEXT_DIM:]
    return out


def items_frame(ids: np.ndarray, owners: np.ndarray, titles: list[str],
                duration_ms: np.ndarray, created_ms: np.ndarray,
                categories: list[str | None], tags: list[list[str]] | None = None
                ) -> pd.DataFrame:
    """The item-tower input for fresh videos, built the same way by the worker and the index
    (``tags`` default to the category, as the catalog knows no hashtags)."""
    return pd.DataFrame({
        "item_id": np.asarray(ids, np.int64), "author_id": np.asarray(owners, np.int64),
        "title": titles,
        "duration_ms": np.where(duration_ms >= 0, duration_ms, np.nan),
        "upload_ts": pd.to_datetime(np.asarray(created_ms, np.int64), unit="ms", utc=True),
        "category": categories,
        "tags": tags if tags is not None else [[c] if c else [] for c in categories],
    })
