"""Feed items as clients get them (:mod:`serving.feed.schemas`): video, creator, media URLs,
counters, source, position.

Media keys follow the transcoder's layout (``videos/<id>/hls/master.m3u8``, one playlist per
rendition beside it, a thumbnail); URLs are pre-signed by the blob store, so they work for S3
and for the local store alike and stay valid for at least half of ``URL_TTL_S``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from candidate_gen.catalog import QUALITIES, Creator, Snapshot
from candidate_gen.sources import SOURCES
from platform_services.storage.blobs import BlobStore

URL_TTL_S = 3600
_CACHE_MAX = 50_000


class MediaUrls:
    """Pre-signed media URLs per video, re-signed once half their life is gone: signing is
    ~15 us a URL, a few per item, and a page should cost less than that."""

    def __init__(self, blobs: BlobStore, ttl_s: int = URL_TTL_S) -> None:
        self.blobs, self.ttl_s = blobs, ttl_s
        self._cache: dict[int, tuple[float, int, dict[str, str]]] = {}

    def get(self, video_id: int, renditions: int = 0) -> dict[str, str]:
        """``hls``, ``thumbnail`` and one URL per rendition in the ``renditions`` bits."""
        now = time.time()
        hit = self._cache.get(video_id)
        if hit is not None and hit[0] > now and hit[1] == renditions:
            return hit[2]
        urls = {k: self.blobs.presign_get(key, self.ttl_s)
                for k, key in media_keys(video_id, renditions).items()}
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[video_id] = (now + self.ttl_s / 2, renditions, urls)
        return urls


def media_keys(video_id: int, renditions: int = 0) -> dict[str, str]:
    """The transcoder's layout: the master playlist, one playlist per rendition, a thumbnail."""
    base = f"videos/{video_id}"
    keys = {"hls": f"{base}/hls/master.m3u8", "thumbnail": f"{base}/thumbnail.jpg"}
    keys |= {q: f"{base}/hls/{q}.m3u8" for i, q in enumerate(QUALITIES) if renditions >> i & 1}
    return keys


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def render(snap: Snapshot, ids: np.ndarray, sources: np.ndarray, positions: np.ndarray,
           urls: MediaUrls, model_version: str, request_id: str) -> list[dict]:
    """One item per id (:class:`serving.feed.schemas.FeedItem`); ``positions`` are the items'
    places in their ranked list."""
    out = []
    cols = (ids.tolist(), sources.tolist(), positions.tolist(), snap.owner[ids].tolist(),
            snap.duration_ms[ids].tolist(), snap.created_ms[ids].tolist(),
            snap.renditions[ids].tolist(), snap.views[ids].tolist(), snap.likes[ids].tolist(),
            snap.comments[ids].tolist(), snap.shares[ids].tolist())
    for v, s, p, owner, dur, created, rend, views, likes, comments, shares in zip(
            *cols, strict=True):
        media = urls.get(v, rend)
        c = snap.creators.get(owner) or Creator(str(owner), str(owner))
        out.append({
            "video_id": v,
            "user": {"user_id": owner, "username": c.username, "display_name": c.display_name,
                     "profile_image_url": c.profile_image_url, "verified": c.verified},
            "title": snap.titles[v] or "",
            "video_urls": {k: u for k, u in media.items() if k != "thumbnail"},
            "thumbnail_url": media["thumbnail"],
            "duration": dur / 1000 if dur >= 0 else None,
            "stats": {"views": views, "likes": likes, "comments": comments, "shares": shares},
            "created_at": _iso(created),
            "source": SOURCES[s],
            "position": p,
            "model_version": model_version,
            "request_id": request_id,
        })
    return out
