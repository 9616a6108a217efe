"""Feed items as clients get them: video, creator, media URLs, counters, source, position.

Media keys follow the transcoder's layout (``videos/<id>/hls/master.m3u8``, a poster and a
thumbnail beside it); URLs are pre-signed by the blob store, so they work for S3 and for the
local store alike and expire after ``URL_TTL_S``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from candidate_gen.catalog import Snapshot
from candidate_gen.sources import SOURCES
from platform_services.storage.blobs import BlobStore

URL_TTL_S = 3600


def media_keys(video_id: int) -> dict[str, str]:
    base = f"videos/{video_id}"
    return {"hls": f"{base}/hls/master.m3u8", "poster": f"{base}/poster.jpg",
            "thumbnail": f"{base}/thumbnail.jpg"}


def render(snap: Snapshot, ids: np.ndarray, sources: np.ndarray, positions: np.ndarray,
           blobs: BlobStore) -> list[dict]:
    """One item per id; ``positions`` are the items' places in their ranked list."""
    out = []
    for v, s, p in zip(ids.tolist(), sources.tolist(), positions.tolist(), strict=True):
        owner = int(snap.owner[v])
        keys = media_keys(v)
        duration = int(snap.duration_ms[v])
        out.append({
            "video": {"id": v, "title": snap.titles[v] or "",
                      "duration_ms": duration if duration >= 0 else None,
                      "created_at": datetime.fromtimestamp(snap.created_ms[v] / 1000, UTC)
                      .isoformat().replace("+00:00", "Z")},
            "user": {"id": owner, "username": snap.usernames.get(owner, "")},
            "urls": {"hls": blobs.presign_get(keys["hls"], URL_TTL_S),
                     "poster": blobs.presign_get(keys["poster"], URL_TTL_S)},
            "thumbnail": blobs.presign_get(keys["thumbnail"], URL_TTL_S),
            "stats": {"views": int(snap.views[v]), "likes": int(snap.likes[v]),
                      "shares": int(snap.shares[v])},
            "source": SOURCES[s],
            "position": p,
        })
    return out
