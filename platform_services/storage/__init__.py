"""Storage adapters: the relational database, blob storage and the Redis cache.

Each backend is picked by a URL in :class:`core.config.Settings`; these factories are the
only place that reads those URLs.
"""

from platform_services.storage.blobs import (
    BlobNotFoundError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    SignatureError,
    open_blob_store,
)
from platform_services.storage.cache import redis_client
from platform_services.storage.db import (
    Base,
    current_revision,
    make_engine,
    migrate,
    session_factory,
    transaction,
)

__all__ = [
    "Base",
    "BlobNotFoundError",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "SignatureError",
    "current_revision",
    "make_engine",
    "migrate",
    "open_blob_store",
    "redis_client",
    "session_factory",
    "transaction",
]
