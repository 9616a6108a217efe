"""Signed playlists (``/api/v1/media/<id>/<exp>/<sig>/...``): see
:mod:`platform_services.media.delivery`. No JWT: the signature in the path is the capability
(as a pre-signed URL is), since players fetch playlists without the app's headers. A CDN may
cache each response until its token expires; a deleted or unready video stops playing at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from platform_services.media.delivery import (
    PLAYLIST_TYPE,
    SPRITE_VTT,
    render_playlist,
    render_sprite_vtt,
)
from platform_services.media.models import VideoMedia
from platform_services.media.uploads import video_prefix
from platform_services.storage.blobs import BlobNotFoundError, SignatureError
from platform_services.storage.models import Video, VideoStatus
from serving.deps import SessionDep
from serving.routes.videos import BlobsDep, SignerDep, errors

router = APIRouter(prefix="/media", tags=["media"])


class _PlaylistResponse(PlainTextResponse):
    """The route's documented response class: without a media type of its own (each 200 sets
    its playlist or VTT type), so the spec documents the errors as the JSON they are."""

    media_type = None


@router.get("/{video_id}/{exp}/{sig}/{path:path}", response_class=_PlaylistResponse,
            responses={200: {"content": {PLAYLIST_TYPE: {"schema": {"type": "string"}},
                                         "text/vtt": {"schema": {"type": "string"}}}},
                       **errors(403, 404)})
async def playlist(
    video_id: Annotated[int, Path(ge=0, le=2**62)],  # world video ids start at 0
    exp: Annotated[int, Path(ge=0, le=2**40)],
    sig: Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]+$")],
    path: Annotated[str, Path(max_length=64)],
    session: SessionDep, blobs: BlobsDep, signer: SignerDep,
) -> PlainTextResponse:
    """A ladder's master or variant playlist, or its scrubbing sprite track."""
    try:
        left = signer.verify(video_id, exp, sig)
    except SignatureError as exc:
        raise HTTPException(403, str(exc)) from None
    prefix = session.scalar(
        select(VideoMedia.media_prefix).join(Video, Video.id == VideoMedia.video_id)
        .where(Video.id == video_id, Video.status == VideoStatus.READY))
    session.commit()  # release the connection before the blob reads
    if prefix is None:
        raise HTTPException(404, f"no playable video {video_id}")
    ttl = min(signer.ttl_s, left)
    try:
        if path == SPRITE_VTT:
            body = await run_in_threadpool(render_sprite_vtt, blobs, video_prefix(video_id), ttl)
            media_type = "text/vtt"
        else:
            body = await run_in_threadpool(render_playlist, blobs, prefix, path, ttl)
            media_type = PLAYLIST_TYPE
    except (ValueError, BlobNotFoundError):
        raise HTTPException(404, f"no {path!r} for video {video_id}") from None
    # Cacheable by a CDN until half the segment URLs' life is gone.
    headers = {"Cache-Control": f"public, max-age={max(ttl // 2, 1)}"}
    return PlainTextResponse(body, media_type=media_type, headers=headers)
