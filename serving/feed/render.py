"""Feed items as clients get them: video, creator, media URLs, counters, source, position.

Media keys follow the transcoder's layout (``videos/<id>/hls/master.m3u8``, a poster and a
thumbnail beside it); URLs are pre-signed by the blob store, so they work for S3 and for the
local store alike and stay valid for at least half of ``URL_TTL_S``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from candidate_gen.catalog import Snapshot
from candidate_gen.sources import SOURCES
from platform_services.media.delivery import PlaylistSigner
from platform_services.storage.blobs import BlobStore

URL_TTL_S = 3600
_CACHE_MAX = 50_000


class MediaUrls:
    """Pre-signed media URLs per video, re-signed once half their life is gone: signing is
    ~15 us a URL, three per item, and a page should cost less than that."""

    def __init__(self, blobs: BlobStore, ttl_s: int = URL_TTL_S,
                 playlists: PlaylistSigner | None = None) -> None:
        self.blobs, self.ttl_s = blobs, ttl_s
        # HLS goes through the signed playlist route (relative segment URIs cannot carry a
        # per-file signature); without a signer, the stored master's pre-signed URL.
        self.playlists = playlists
        self._cache: dict[int, tuple[float, dict[str, str]]] = {}

    def get(self, video_id: int) -> dict[str, str]:
        now = time.time()
        hit = self._cache.get(video_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        urls = {k: self.blobs.presign_get(key, self.ttl_s)
                for k, key in media_keys(video_id).items()}
        if self.playlists is not None:
            urls["hls"] = self.playlists.url(video_id)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[video_id] = (now + self.ttl_s / 2, urls)
        return urls


def media_keys(video_id: int) -> dict[str, str]:
    base = f"videos/{video_id}"
    return {"hls": f"{base}/hls/master.m3u8", "poster": f"{base}/poster.jpg",
            "thumbnail": f"{base}/thumbnail.jpg"}


def render(snap: Snapshot, ids: np.ndarray, sources: np.ndarray, positions: np.ndarray,
           urls: MediaUrls) -> list[dict]:
    """One item per id; ``positions`` are the items' places in their ranked list."""
    out = []
    for v, s, p in zip(ids.tolist(), sources.tolist(), positions.tolist(), strict=True):
        owner = int(snap.owner[v])
        media = urls.get(v)
        duration = int(snap.duration_ms[v])
        out.append({
            "video": {"id": v, "title": snap.titles[v] or "",
                      "duration_ms": duration if duration >= 0 else None,
                      "created_at": datetime.fromtimestamp(snap.created_ms[v] / 1000, UTC)
                      .isoformat().replace("+00:00", "Z")},
            "user": {"id": owner, "username": snap.usernames.get(owner, "")},
            "urls": {"hls": media["hls"], "poster": media["poster"]},
            "thumbnail": media["thumbnail"],
            "stats": {"views": int(snap.views[v]), "likes": int(snap.likes[v]),
                      "shares": int(snap.shares[v])},
            "source": SOURCES[s],
            "position": p,
        })
    return out
