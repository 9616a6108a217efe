"""The feature-store suite runs on both online stores: SQLite (embedded) and a real Redis."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from core.config import Settings, get_settings
from features.batch import build_features, write_features
from features.store import apply_repo, materialize_batch, online_kind, repo_dir
from training.datasets.synth import SynthConfig, generate

STORES = ["sqlite", "redis"]


@pytest.fixture(scope="session")
def world() -> dict[str, pd.DataFrame]:
    """A small synthetic world: 3 days, daily snapshots at the day boundaries."""
    return generate(SynthConfig(n_users=40, n_videos=80, days=3, seed=3))


@pytest.fixture(params=STORES)
def store_settings(
    request: pytest.FixtureRequest, settings: Settings, clean_env: pytest.MonkeyPatch
) -> Settings:
    """Test settings whose online store is ``request.param`` (Redis: its own, flushed DB)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url") + "?db=9"
        clean_env.setenv("REELRANK_REDIS_URL", url)
        redis.Redis.from_url(url).flushdb()
    else:
        clean_env.setenv("REELRANK_FEATURE_ONLINE_URL", "sqlite://")
    get_settings.cache_clear()
    s = get_settings()
    assert online_kind(s) == request.param
    return s


@pytest.fixture
def built(store_settings: Settings, world: dict[str, pd.DataFrame]) -> Settings:
    """Batch features of ``world`` built, applied and materialized into the online store."""
    feats = build_features(world["interactions"], world["items"], world["users"], world["follows"])
    write_features(repo_dir(store_settings), feats)
    apply_repo(store_settings)
    materialize_batch(store_settings)
    return store_settings
