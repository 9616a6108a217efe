"""Playback URLs that work on any blob backend: signed HLS playlists.

An HLS master playlist names its variant playlists, and those name their segments, by
relative URI, so a per-file pre-signed URL cannot work (the player resolves ``360p/index.m3u8``
against the master's URL and drops its signature). Playlists are therefore served by the API
under a per-video token carried in the path (``/api/v1/media/<id>/<exp>/<sig>/master.m3u8``),
which relative URIs inherit; a variant playlist is rewritten on the way out so that each
segment line is the blob store's own short-lived pre-signed GET (S3, or the local store's
HMAC URL). Segments, the heavy bytes, never pass through the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from pydantic import SecretStr

from core.config import Settings
from platform_services.storage.blobs import BlobStore, SignatureError

MEDIA_PATH = "/api/v1/media"  # where serving mounts the playlist route
MASTER = "master.m3u8"
VARIANT = re.compile(r"^(\d{2,4}p)/index\.m3u8$")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


@dataclass(frozen=True)
class PlaylistSigner:
    """Signs and checks the per-video playlist token (HMAC-SHA256 of video id and expiry)."""

    secret: bytes
    base_url: str
    ttl_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PlaylistSigner:
        secret = settings.signing_secret or SecretStr("")
        return cls(secret.get_secret_value().encode(), settings.api_base_url.rstrip("/"),
                   settings.media_url_ttl_s)

    def _sig(self, video_id: int, exp: int) -> str:
        msg = f"hls\n{video_id}\n{exp}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:32]

    def url(self, video_id: int, path: str = MASTER) -> str:
        exp = int(time.time()) + self.ttl_s
        return f"{self.base_url}{MEDIA_PATH}/{video_id}/{exp}/{self._sig(video_id, exp)}/{path}"

    def verify(self, video_id: int, exp: int, sig: str) -> int:
        """Seconds the token has left; :class:`SignatureError` if forged or expired."""
        if not hmac.compare_digest(self._sig(video_id, exp), sig):
            raise SignatureError("playlist signature does not match")
        left = exp - int(time.time())
        if left <= 0:
            raise SignatureError("playlist URL has expired")
        return left


QUALITIES = ("360p", "720p", "1080p")  # the design's rendition names (``video_urls`` keys)


def variant_path(name: str) -> str:
    """A rendition's (``720p``) playlist path under the token."""
    return f"{name}/index.m3u8"


def render_playlist(blobs: BlobStore, prefix: str, path: str, ttl_s: int) -> str:
    """The stored playlist ``path`` of the ladder at ``prefix``; a variant's segment lines are
    replaced by pre-signed GETs valid ``ttl_s``. Raises ValueError for any other path and
    :class:`~platform_services.storage.blobs.BlobNotFoundError` when missing."""
    variant = VARIANT.match(path)
    if path != MASTER and variant is None:
        raise ValueError(f"no playlist {path!r}")
    text = blobs.get(f"{prefix}hls/{path}").decode()
    if variant is None:
        return text  # the master's relative variant URIs inherit the token
    base = f"{prefix}hls/{variant.group(1)}/"
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            if "/" in line or line.startswith("."):
                raise ValueError(f"unexpected segment URI {line!r}")
            line = blobs.presign_get(base + line, ttl_s)
        lines.append(line)
    return "\n".join(lines) + "\n"


SPRITE_VTT = "sprite.vtt"


def render_sprite_vtt(blobs: BlobStore, own_prefix: str, ttl_s: int) -> str:
    """The scrubbing track: each cue's ``sprite.jpg#xywh=...`` made a pre-signed GET."""
    text = blobs.get(f"{own_prefix}{SPRITE_VTT}").decode()
    url = blobs.presign_get(f"{own_prefix}sprite.jpg", ttl_s)
    return text.replace("sprite.jpg#", f"{url}#")
