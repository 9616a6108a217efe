"""Blob storage (videos, renditions, thumbnails): a local directory or S3, one interface.

Clients upload and download through pre-signed URLs, so the API never proxies video bytes.
S3 signs its own URLs; the local store signs ``{base_url}/blobs/{key}`` with an HMAC that
:mod:`platform_services.storage.blob_routes` checks, so both backends behave alike.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode

from pydantic import SecretStr

if TYPE_CHECKING:
    from core.config import Settings

Data = bytes | IO[bytes]
Op = Literal["put", "get"]
MAX_KEY_LEN = 1024


class BlobNotFoundError(LookupError):
    """No blob under that key."""


class SignatureError(PermissionError):
    """A pre-signed URL is tampered with, for another operation, or expired."""


def validate_key(key: str) -> str:
    """Keys are ``/``-separated segments, none empty or hidden, so none can leave the root."""
    if not key or len(key) > MAX_KEY_LEN:
        raise ValueError(f"invalid blob key {key!r}: must be 1-{MAX_KEY_LEN} characters")
    if key.startswith("/"):
        raise ValueError(f"invalid blob key {key!r}: must not start with '/'")
    if "\\" in key or any(ord(c) < 32 for c in key):
        raise ValueError(f"invalid blob key {key!r}: no backslashes or control characters")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise ValueError(
                f"invalid blob key {key!r}: segments may not be empty or start with '.' ('..')"
            )
    return key


class BlobStore(ABC):
    """Put, get and list opaque blobs by key; hand out time-limited URLs for clients."""

    @abstractmethod
    def put(self, key: str, data: Data, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` (bytes or a binary file object, streamed) under ``key``, replacing it."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The blob's bytes; raises :class:`BlobNotFoundError`."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error (as on S3)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, as on S3), sorted."""

    @abstractmethod
    def presign_put(self, key: str, expires_s: int = 900, content_type: str | None = None) -> str:
        """A URL the client ``PUT``s the bytes to (with this ``Content-Type`` if one is given)."""

    @abstractmethod
    def presign_get(self, key: str, expires_s: int = 900) -> str:
        """A URL the client ``GET``s the bytes from."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The blob's length in bytes; raises :class:`BlobNotFoundError`."""

    def download(self, key: str, path: Path) -> None:
        """Write the blob to a local file (streamed where the backend can)."""
        path.write_bytes(self.get(key))

    def copy(self, src: str, dst: str, content_type: str = "application/octet-stream") -> None:
        """Copy a blob to another key (server-side where the backend can)."""
        self.put(dst, self.get(src), content_type)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix`` (which must end with ``/``); how many."""
        if not prefix.endswith("/"):
            raise ValueError(f"prefix {prefix!r} must end with '/'")
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``; URLs point at the API's ``/blobs`` routes."""

    def __init__(self, root: str | Path, secret: str | bytes | SecretStr, base_url: str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if isinstance(secret, SecretStr):
            secret = secret.get_secret_value()
        self._secret = secret.encode() if isinstance(secret, str) else secret
        if not self._secret:
            raise ValueError("LocalBlobStore needs a non-empty signing secret")
        self.base_url = base_url.rstrip("/")

    def path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: Data, content_type: str = "application/octet-stream") -> None:
        # Write a temp file beside the target and rename it in: readers never see half a blob.
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, bytes | bytearray | memoryview):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def download(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self.path(key), path)
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def copy(self, src: str, dst: str, content_type: str = "application/octet-stream") -> None:
        with open(self.path(src), "rb") as f:
            self.put(dst, f, content_type)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        start = self.root / prefix.rpartition("/")[0]  # walk only the prefix's directory
        keys = (
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".")  # skips in-flight .part files
        )
        return sorted(k for k in keys if k.startswith(prefix))

    # --- pre-signed URLs ---------------------------------------------------------------------

    def _sign(self, key: str, op: str, exp: int, content_type: str | None) -> str:
        msg = "\n".join((op, key, str(exp), content_type or "")).encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _presign(self, key: str, op: Op, expires_s: int, content_type: str | None = None) -> str:
        exp = int(time.time()) + expires_s
        query = {"op": op, "exp": exp, "sig": self._sign(validate_key(key), op, exp, content_type)}
        if content_type:
            query["ct"] = content_type
        return f"{self.base_url}/blobs/{quote(key, safe='/')}?{urlencode(query)}"

    def presign_put(self, key: str, expires_s: int = 900, content_type: str | None = None) -> str:
        return self._presign(key, "put", expires_s, content_type)

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        return self._presign(key, "get", expires_s)

    def verify(
        self, key: str, op: str, exp: str | int, sig: str, content_type: str | None = None
    ) -> None:
        """Accept a URL this store signed for ``op`` that has not expired; else SignatureError."""
        try:
            exp_i = int(exp)
        except (TypeError, ValueError):
            raise SignatureError("malformed expiry") from None
        expected = self._sign(key, op, exp_i, content_type)
        if not hmac.compare_digest(expected, sig or ""):
            raise SignatureError("signature does not match this key and operation")
        if exp_i < time.time():
            raise SignatureError("URL has expired")


class S3BlobStore(BlobStore):
    """Blobs in one S3 bucket (or an S3-compatible endpoint such as moto or MinIO)."""

    def __init__(
        self, bucket: str, endpoint_url: str | None = None, region: str = "us-east-1"
    ) -> None:
        import boto3  # a second or so to import; only when S3 is configured
        from botocore.config import Config

        self.bucket, self.region = bucket, region
        # Path-style addressing: custom endpoints rarely resolve bucket subdomains.
        style = "path" if endpoint_url else "auto"
        config = Config(signature_version="s3v4", s3={"addressing_style": style})
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def create_bucket(self) -> None:
        """Create the bucket if missing (dev and tests; production buckets are provisioned)."""
        kwargs: dict = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # us-east-1 rejects an explicit location constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(**kwargs)

    def put(self, key: str, data: Data, content_type: str = "application/octet-stream") -> None:
        key = validate_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=bytes(data), ContentType=content_type
            )
        else:  # multipart for large files
            self.client.upload_fileobj(
                data, self.bucket, key, ExtraArgs={"ContentType": content_type}
            )

    def get(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFoundError(key) from None
        return obj["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise BlobNotFoundError(key) from None
            raise
        return int(head["ContentLength"])

    def download(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, validate_key(key), str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise BlobNotFoundError(key) from None
            raise

    def copy(self, src: str, dst: str, content_type: str = "application/octet-stream") -> None:
        self.client.copy_object(
            Bucket=self.bucket, Key=validate_key(dst), ContentType=content_type,
            CopySource={"Bucket": self.bucket, "Key": validate_key(src)},
            MetadataDirective="REPLACE",
        )

    def list(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def presign_put(self, key: str, expires_s: int = 900, content_type: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": validate_key(key)}
        if content_type:
            params["ContentType"] = content_type
        return self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_s)

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        params = {"Bucket": self.bucket, "Key": validate_key(key)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)


def open_blob_store(settings: Settings) -> BlobStore:
    """The store ``settings.blob_url`` names (local URLs point at ``settings.api_base_url``)."""
    scheme, _, rest = settings.blob_url.partition("://")
    if scheme == "file":
        assert settings.signing_secret is not None  # filled in by Settings' validator
        return LocalBlobStore(rest, settings.signing_secret, settings.api_base_url)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket or prefix:
            raise ValueError(f"blob_url: expected s3://BUCKET, got {settings.blob_url!r}")
        return S3BlobStore(bucket, settings.s3_endpoint_url, settings.s3_region)
    raise ValueError(f"blob_url: unsupported scheme {scheme!r}")
