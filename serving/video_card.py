"""The fields every video shown to a client has, in the product design's shape (its API
section): ``video_id``, ``user {user_id, username, display_name, profile_image_url,
verified}``, ``title``, ``video_urls``, ``thumbnail_url``, ``duration`` (seconds), ``stats
{views, likes, comments, shares}``, ``created_at``.

One model, :class:`VideoCard`, so that the feeds' items (:class:`serving.feed.schemas.FeedItem`)
and ``GET /api/v1/videos/{id}`` (:class:`serving.routes.videos.VideoOut`) cannot drift apart;
each adds its own fields. The playback URLs are made by :func:`playback_urls` for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from platform_services.media.delivery import QUALITIES, PlaylistSigner, variant_path
from platform_services.media.uploads import video_prefix
from platform_services.storage.blobs import BlobStore
from platform_services.storage.models import User, Video, VideoStats

if TYPE_CHECKING:
    from platform_services.media.models import VideoMedia


def _absent(value: Any) -> bool:
    return value is None


class VideoUser(BaseModel):
    """The creator as a video shows them."""

    user_id: int
    username: str
    display_name: str  # the username until the account sets a display name
    profile_image_url: str | None
    verified: bool

    @classmethod
    def of(cls, user: User) -> VideoUser:
        return cls(user_id=user.id, username=user.username,
                   display_name=user.display_name or user.username,
                   profile_image_url=user.avatar_url, verified=bool(user.verified))


class VideoUrls(BaseModel):
    """``hls``: the adaptive master playlist, served signed by ``/api/v1/media/...``; ``null``
    while the video has no stored ladder (processing, or imported from a data set without
    media). Each quality: its own rendition playlist, present only when the ladder has it (it
    is never upscaled); ``source``: the one rung of a source smaller than 360p."""

    model_config = ConfigDict(populate_by_name=True)

    hls: str | None
    q360p: str | None = Field(default=None, alias="360p", exclude_if=_absent)
    q720p: str | None = Field(default=None, alias="720p", exclude_if=_absent)
    q1080p: str | None = Field(default=None, alias="1080p", exclude_if=_absent)
    source: str | None = Field(default=None, exclude_if=_absent)


class VideoStatsOut(BaseModel):
    views: int
    likes: int
    comments: int
    shares: int


class VideoCard(BaseModel):
    video_id: int
    user: VideoUser
    title: str
    video_urls: VideoUrls
    thumbnail_url: str | None  # null while there is no ladder (no artwork either)
    duration: float | None  # seconds; null until the transcoder has measured it
    stats: VideoStatsOut
    created_at: datetime


def playback_urls(signer: PlaylistSigner, blobs: BlobStore, video_id: int,
                  renditions: Iterable[str], ttl_s: int) -> dict[str, str]:
    """``hls``, one playlist per rendition (keyed as :class:`VideoUrls` names them) and
    ``thumbnail`` for a video whose ladder has ``renditions`` (the transcoder's layout:
    ``<prefix>hls/master.m3u8``, ``<prefix>hls/<rung>/index.m3u8``, artwork under the video's
    own prefix). Playlists go through the signed route, since their relative URIs cannot
    carry a per-file signature; the thumbnail is the blob store's pre-signed GET."""
    urls = {"hls": signer.url(video_id)}
    for name in renditions:
        urls[name if name in QUALITIES else "source"] = signer.url(video_id, variant_path(name))
    urls["thumbnail"] = blobs.presign_get(f"{video_prefix(video_id)}thumbnail.jpg", ttl_s)
    return urls


def card_fields(video: Video, owner: User, media: VideoMedia | None, stats: VideoStats | None,
                signer: PlaylistSigner, blobs: BlobStore) -> dict[str, Any]:
    """The :class:`VideoCard` fields of a stored video (playback URLs once it is ready with a
    ladder): what the routes that read videos from the database (not the feed's in-memory
    catalog) return."""
    urls: dict[str, str] = {}
    if video.status.value == "ready" and media is not None and media.renditions:
        urls = playback_urls(signer, blobs, video.id, [r["name"] for r in media.renditions],
                             signer.ttl_s)
    thumbnail = urls.pop("thumbnail", None)
    return {
        "video_id": video.id, "user": VideoUser.of(owner), "title": video.title,
        "video_urls": VideoUrls(hls=urls.pop("hls", None), **urls), "thumbnail_url": thumbnail,
        "duration": video.duration_ms / 1000 if video.duration_ms is not None else None,
        "stats": VideoStatsOut(views=stats.views if stats else 0,
                               likes=stats.likes if stats else 0,
                               comments=stats.comments if stats else 0,
                               shares=stats.shares if stats else 0),
        "created_at": video.created_at,
    }
