"""HTTP routes that make :class:`LocalBlobStore`'s pre-signed URLs real.

Mounted by the API when blobs live in a local directory: clients then upload and download
exactly as they would against S3, with a signed, expiring URL and no session.
"""

from __future__ import annotations

import errno
import mimetypes
import tempfile
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from platform_services.storage.blobs import LocalBlobStore, SignatureError, validate_key

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
# Media types mimetypes may not know (HLS playlists and MPEG-TS segments, WebVTT tracks).
_MEDIA_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
                ".vtt": "text/vtt", ".m4s": "video/iso.segment"}
_SPOOL_BYTES = 8 * 1024 * 1024  # uploads larger than this go to a temp file, not memory


class BlobKeyConvertor(PathConvertor):
    """A blob key of any characters. Starlette's ``path`` pattern (``.*``) stops at a newline,
    so a key holding one matched no route (an undocumented 404) instead of reaching
    :func:`validate_key`, which refuses control characters with a 400 naming the key."""

    regex = "[\\s\\S]*"


register_url_convertor("blobkey", BlobKeyConvertor())


def _check(
    store: LocalBlobStore, key: str, op: str, request: Request, content_type: str | None = None
) -> None:
    q = request.query_params
    try:
        validate_key(key)
    except ValueError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    if q.get("op") != op:
        raise HTTPException(403, detail=f"URL is not signed for {op.upper()}")
    try:
        store.verify(key, op, q.get("exp", ""), q.get("sig", ""), content_type)
    except SignatureError as exc:
        raise HTTPException(403, detail=str(exc)) from None


# A full disk (or quota) is the storage's state, not a bug: 507 Insufficient Storage.
_FULL = (errno.ENOSPC, errno.EDQUOT)


async def _store(store: LocalBlobStore, key: str, request: Request, content_type: str,
                 max_upload_bytes: int) -> int:
    """Spool the request body (bounded) and put it; its size."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:  # a chunked upload can lie by omission
                raise HTTPException(413, detail=f"upload exceeds {max_upload_bytes} bytes")
            body.write(chunk)
        body.seek(0)
        await run_in_threadpool(store.put, key, body, content_type)
    return size


def blob_router(
    store: LocalBlobStore, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    put_responses: dict[int | str, dict[str, Any]] | None = None,
    get_responses: dict[int | str, dict[str, Any]] | None = None,
) -> APIRouter:
    """``PUT``/``GET /blobs/{key}`` serving ``store``, refusing uploads over the size limit
    (413) and, when the store's disk is full, with 507 (the store writes a temp file and
    renames it in, so nothing half-written is left). ``*_responses``: the OpenAPI entries of
    each route's error statuses (the API's error body lives above this package)."""
    router = APIRouter(tags=["blobs"])

    @router.put("/blobs/{key:blobkey}", responses=put_responses)
    async def put_blob(key: str, request: Request) -> dict[str, object]:
        signed_type = request.query_params.get("ct")
        _check(store, key, "put", request, signed_type)
        content_type = request.headers.get("content-type", "application/octet-stream")
        if signed_type and content_type != signed_type:
            raise HTTPException(403, detail=f"URL is signed for Content-Type {signed_type}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload_bytes:
            raise HTTPException(413, detail=f"upload exceeds {max_upload_bytes} bytes")
        try:
            size = await _store(store, key, request, content_type, max_upload_bytes)
        except OSError as exc:  # the spool's or the store's disk
            if exc.errno not in _FULL:
                raise
            raise HTTPException(507, detail="blob storage is full; retry later") from None
        return {"key": key, "size": size}

    @router.get("/blobs/{key:blobkey}", responses=get_responses)
    async def get_blob(key: str, request: Request) -> FileResponse:
        _check(store, key, "get", request)
        path = store.path(key)
        if not path.is_file():
            raise HTTPException(404, detail=f"no blob {key!r}")
        media_type = _MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] \
            or "application/octet-stream"
        # FileResponse answers Range requests (206). The URL is signed and expires, so a CDN
        # may keep the bytes until then (blobs under a key are written once, then deleted).
        left = max(int(request.query_params.get("exp", "0")) - int(time.time()), 0)
        headers = {"Cache-Control": f"public, max-age={left}, immutable"}
        return FileResponse(path, media_type=media_type, headers=headers)

    return router
