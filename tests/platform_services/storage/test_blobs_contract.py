"""One contract for blob storage, run on every backend (local directory and S3 via moto).

Pre-signed URLs are exercised over HTTP: the local store through its FastAPI routes, S3
through httpx against moto's server.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.config import Settings
from platform_services.storage.blob_routes import blob_router
from platform_services.storage.blobs import (
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
)

MAX_UPLOAD = 4096


@dataclass
class Backend:
    store: BlobStore
    http: httpx.Client  # TestClient is an httpx.Client too


@contextmanager
def _local_backend(root: Path) -> Iterator[Backend]:
    """A local store behind its blob routes, in an app served in-process by TestClient."""
    store = LocalBlobStore(root, "test-secret", "http://testserver")
    app = FastAPI()
    app.include_router(blob_router(store, max_upload_bytes=MAX_UPLOAD))
    with TestClient(app) as client:
        yield Backend(store, client)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        with _local_backend(tmp_path / "blobs") as local:
            yield local
    else:
        s3 = S3BlobStore(f"b-{uuid.uuid4().hex[:12]}", request.getfixturevalue("s3_endpoint"))
        s3.create_bucket()
        s3.create_bucket()  # idempotent
        with httpx.Client() as client:
            yield Backend(s3, client)


def test_put_get_exists_delete_list(backend: Backend) -> None:
    store = backend.store
    assert not store.exists("videos/1/source.mp4")
    store.put("videos/1/source.mp4", b"v1", "video/mp4")
    store.put("videos/1/source.mp4", b"v2", "video/mp4")  # replaces
    store.put("videos/1/poster.jpg", io.BytesIO(b"jpeg" * 1000), "image/jpeg")  # streamed
    store.put("videos/10/source.mp4", b"x")
    assert store.get("videos/1/source.mp4") == b"v2"
    assert store.get("videos/1/poster.jpg") == b"jpeg" * 1000
    assert store.exists("videos/1/source.mp4")
    assert store.list("videos/1/") == ["videos/1/poster.jpg", "videos/1/source.mp4"]
    assert store.list("videos/1") == [  # a plain string prefix, as on S3
        "videos/1/poster.jpg",
        "videos/1/source.mp4",
        "videos/10/source.mp4",
    ]
    assert store.list("nothing/") == []
    store.delete("videos/1/source.mp4")
    store.delete("videos/1/source.mp4")  # deleting a missing key is fine
    assert not store.exists("videos/1/source.mp4")
    with pytest.raises(BlobNotFoundError):
        store.get("videos/1/source.mp4")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a\\b", ".hidden", "a/./b"])
def test_bad_keys_are_rejected_by_name(backend: Backend, key: str) -> None:
    for op in (
        lambda: backend.store.put(key, b"x"),
        lambda: backend.store.get(key),
        lambda: backend.store.presign_get(key),
    ):
        with pytest.raises(ValueError, match="invalid blob key"):
            op()


def test_presigned_put_then_get_over_http(backend: Backend) -> None:
    key, body = "uploads/7/clip.mp4", b"\x00\x01video bytes" * 50
    put_url = backend.store.presign_put(key, expires_s=60, content_type="video/mp4")
    resp = backend.http.put(put_url, content=body, headers={"Content-Type": "video/mp4"})
    assert resp.status_code == 200, resp.text
    assert backend.store.get(key) == body
    resp = backend.http.get(backend.store.presign_get(key, expires_s=60))
    assert resp.status_code == 200 and resp.content == body


# --- local-only: the signature checks our routes make --------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Backend]:
    with _local_backend(tmp_path / "blobs") as backend:
        backend.store.put("a/b.txt", b"hello")
        yield backend


def _refused(resp: httpx.Response, status: int = 403) -> str:
    assert resp.status_code == status, resp.text
    return resp.json()["detail"]


def test_tampered_urls_are_refused(local: Backend) -> None:
    url = local.store.presign_get("a/b.txt")
    sig = url.rsplit("sig=", 1)[1]
    forged = url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    assert "signature" in _refused(local.http.get(forged))
    assert "signature" in _refused(local.http.get(url.replace("/a/b.txt", "/a/c.txt")))
    later = url.replace("exp=", "exp=9")  # pushing the expiry out breaks the signature
    assert "signature" in _refused(local.http.get(later))
    assert local.http.get(url).content == b"hello"


def test_wrong_operation_is_refused(local: Backend) -> None:
    get_url = local.store.presign_get("a/b.txt")
    _refused(local.http.put(get_url, content=b"overwrite"))
    _refused(local.http.put(get_url.replace("op=get", "op=put"), content=b"overwrite"))
    put_url = local.store.presign_put("a/new.txt", content_type="text/plain")
    _refused(local.http.get(put_url))
    _refused(local.http.put(put_url, content=b"x", headers={"Content-Type": "video/mp4"}))
    assert local.store.get("a/b.txt") == b"hello" and not local.store.exists("a/new.txt")


def test_expired_url_is_refused(local: Backend) -> None:
    assert "expired" in _refused(local.http.get(local.store.presign_get("a/b.txt", expires_s=-1)))


def test_a_key_with_a_newline_reaches_the_route_and_is_refused_by_name(local: Backend) -> None:
    """Found by schemathesis: ``PUT /blobs/a%0Ab`` matched no route (an undocumented 404)."""
    for method in ("PUT", "GET"):
        detail = _refused(local.http.request(method, "/blobs/a%0Ab?exp=1&sig=x"), 400)
        assert "invalid blob key" in detail and "control characters" in detail


def test_missing_blob_and_oversized_upload(local: Backend) -> None:
    _refused(local.http.get(local.store.presign_get("a/none.txt")), 404)
    url = local.store.presign_put("a/big.bin")
    _refused(local.http.put(url, content=b"x" * (MAX_UPLOAD + 1)), 413)
    chunked = iter([b"x" * 1024] * 5)  # no Content-Length: the limit holds while streaming
    _refused(local.http.put(url, content=chunked), 413)
    assert not local.store.exists("a/big.bin") and local.store.list("a/") == ["a/b.txt"]


def test_open_blob_store_follows_the_url(settings: Settings, s3_endpoint: str) -> None:
    local = open_blob_store(settings)
    assert isinstance(local, LocalBlobStore)
    assert local.root == (settings.var_dir / "blobs").resolve()
    s3 = settings.model_copy(update={"blob_url": "s3://media", "s3_endpoint_url": s3_endpoint})
    assert isinstance(open_blob_store(s3), S3BlobStore)
    with pytest.raises(ValueError, match="blob_url"):
        open_blob_store(settings.model_copy(update={"blob_url": "s3://media/prefix"}))
