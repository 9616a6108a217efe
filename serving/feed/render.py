"""Feed items as clients get them (:class:`serving.feed.schemas.FeedItem`, the shared
:class:`serving.video_card.VideoCard` plus source, position, model version, request id).

Playback URLs follow the media pipeline (:func:`serving.video_card.playback_urls`): the signed
playlist route for ``hls`` and each rendition the ladder has, the blob store's pre-signed GET
for the thumbnail; a video without a stored ladder has neither. They are cached per video and
re-signed once half their life is gone, so they always have at least half of it left.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from candidate_gen.catalog import LADDER, QUALITIES, Creator, Snapshot
from candidate_gen.sources import SOURCES
from platform_services.media.delivery import PlaylistSigner
from platform_services.storage.blobs import BlobStore
from serving.video_card import playback_urls

_CACHE_MAX = 50_000
_NO_MEDIA: dict[str, str] = {}


class MediaUrls:
    """Playback URLs per video: signing is ~15 us a URL, up to five per item, and a page
    should cost less than that."""

    def __init__(self, blobs: BlobStore, playlists: PlaylistSigner) -> None:
        self.blobs, self.playlists = blobs, playlists
        self.ttl_s = playlists.ttl_s
        self._cache: dict[int, tuple[float, int, dict[str, str]]] = {}

    def get(self, video_id: int, renditions: int = LADDER, small_rung: str | None = None
            ) -> dict[str, str]:
        """``hls``, ``thumbnail`` and a playlist per rendition in the ``renditions`` bits
        (:data:`candidate_gen.catalog.LADDER`) and ``small_rung``; nothing without a ladder."""
        if not renditions & LADDER:
            return _NO_MEDIA
        now = time.time()
        hit = self._cache.get(video_id)
        if hit is not None and hit[0] > now and hit[1] == renditions:
            return hit[2]
        names = [q for i, q in enumerate(QUALITIES) if renditions >> (i + 1) & 1]
        urls = playback_urls(self.playlists, self.blobs, video_id,
                             names + ([small_rung] if small_rung else []), self.ttl_s)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[video_id] = (now + self.ttl_s / 2, renditions, urls)
        return urls


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def render(snap: Snapshot, ids: np.ndarray, sources: np.ndarray, positions: np.ndarray,
           urls: MediaUrls, model_version: str, request_id: str) -> list[dict]:
    """One item per id; ``positions`` are the items' places in their ranked list."""
    out = []
    cols = (ids.tolist(), sources.tolist(), positions.tolist(), snap.owner[ids].tolist(),
            snap.duration_ms[ids].tolist(), snap.created_ms[ids].tolist(),
            snap.renditions[ids].tolist(), snap.views[ids].tolist(), snap.likes[ids].tolist(),
            snap.comments[ids].tolist(), snap.shares[ids].tolist())
    for v, s, p, owner, dur, created, rend, views, likes, comments, shares in zip(
            *cols, strict=True):
        media = urls.get(v, rend, snap.small_rungs.get(v))
        c = snap.creators.get(owner) or Creator(str(owner), str(owner))
        out.append({
            "video_id": v,
            "user": {"user_id": owner, "username": c.username, "display_name": c.display_name,
                     "profile_image_url": c.profile_image_url, "verified": c.verified},
            "title": snap.titles[v] or "",
            "video_urls": {"hls": media.get("hls")}
            | {k: u for k, u in media.items() if k not in ("hls", "thumbnail")},
            "thumbnail_url": media.get("thumbnail"),
            "duration": dur / 1000 if dur >= 0 else None,
            "stats": {"views": views, "likes": likes, "comments": comments, "shares": shares},
            "created_at": _iso(created),
            "source": SOURCES[s],
            "position": p,
            "model_version": model_version,
            "request_id": request_id,
        })
    return out
