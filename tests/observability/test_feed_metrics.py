"""The feed's metrics through the real app on a small synthetic world (no trained models: the
feed serves degraded, which is what one of these tests wants): per-stage for-you timings, the
degraded counter, the page-cache hit/miss counter and the ranked-by-version counter; and the
model-version gauge of :class:`~serving.ranking.models.AliasModels` as an alias moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.config import Settings
from platform_services.auth import issue_token
from platform_services.storage.db import migrate
from serving import demo
from serving.app import create_app
from serving.feed.pipeline import FALLBACK_VERSION
from serving.ranking.models import AliasModels
from training.datasets.store import load_dataset, write_dataset
from training.datasets.synth import SynthConfig, generate, recent_start
from training.datasets.world import load_world

FEED = "/api/v1/feed/for-you"
STAGES = ("queue", "viewer", "candidates", "filter", "ranking", "rerank", "page")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def feed_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """The API with its feed services over 40 users and 120 videos, no models registered,
    the online features on an empty SQLite store (so ``features`` degrades too)."""
    cfg = SynthConfig(n_users=40, n_videos=120, days=2, seed=3, start=recent_start(2))
    write_dataset(demo.DATASET, generate(cfg), "synth", root=settings.data_dir)
    migrate(settings.database_url)
    load_world(settings, load_dataset(demo.DATASET, settings.data_dir))
    app_settings = settings.model_copy(update={
        "ranker_backend": "local", "feature_online_url": "sqlite://",
        "feature_repo_dir": tmp_path / "empty-repo", "model_poll_s": 60.0})
    with TestClient(create_app(app_settings)) as c:
        yield c


def test_for_you_metrics(feed_client: TestClient, settings: Settings) -> None:
    stage_before = {s: value("reelrank_feed_stage_seconds_count", feed="for_you", stage=s)
                    for s in STAGES}
    degraded_before = value("reelrank_feed_degraded_total", component="ranker")
    fallback_before = value("reelrank_feed_ranked_pages_total", alias="champion",
                            version=FALLBACK_VERSION)
    hits_before = value("reelrank_cache_lookups_total", cache="feed_page", result="hit")
    headers = {"Authorization": f"Bearer {issue_token(settings, 3)}"}

    first = feed_client.get(FEED, headers=headers, params={"page_size": 5})
    assert first.status_code == 200, first.text
    assert "ranker" in first.headers["X-Reelrank-Degraded"].split(",")  # none registered
    assert first.json()["next_cursor"], "the world is big enough for a second page"
    second = feed_client.get(FEED, headers=headers,
                             params={"page_size": 5, "cursor": first.json()["next_cursor"]})
    assert second.status_code == 200 and second.json()["videos"]

    for stage in STAGES:  # the first page went through every stage once
        assert value("reelrank_feed_stage_seconds_count", feed="for_you", stage=stage) \
            >= stage_before[stage] + 1, stage
    timed = {part.split(";")[0] for part in first.headers["Server-Timing"].split(", ")}
    assert set(STAGES) <= timed  # the header and the histogram come from the same trace
    assert value("reelrank_feed_stage_seconds_count", feed="for_you", stage="cache") >= 1
    # The cached list remembers it was built without the ranker: both pages count.
    assert value("reelrank_feed_degraded_total", component="ranker") == degraded_before + 2
    assert value("reelrank_feed_ranked_pages_total", alias="champion",
                 version=FALLBACK_VERSION) == fallback_before + 1
    assert value("reelrank_cache_lookups_total", cache="feed_page", result="hit") \
        == hits_before + 1
    metrics = feed_client.get("/metrics/").text
    assert 'reelrank_feed_stage_seconds_bucket{feed="for_you",le="+Inf",stage="ranking"}' \
        in metrics
    assert 'reelrank_feed_degraded_total{component="ranker"}' in metrics
    assert ('reelrank_http_request_duration_seconds_count{method="GET",'
            'route="/api/v1/feed/for-you",status="2xx"}') in metrics


def test_model_version_gauge_follows_the_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """The alias resolves to version 1, then moves to 2: 1 for what serves, 0 for the old."""
    from training import registry

    target = {"version": "1"}
    monkeypatch.setattr(registry, "resolve",
                        lambda uri: SimpleNamespace(version=target["version"]))
    models: AliasModels[str] = AliasModels("obs-test-model", lambda uri: f"loaded {uri}")
    models.load_now("champion")
    assert value("reelrank_model_loaded", model="obs-test-model", alias="champion",
                 version="1") == 1
    target["version"] = "2"
    models.poll()
    assert models.get("champion").version == "2"
    assert value("reelrank_model_loaded", model="obs-test-model", alias="champion",
                 version="2") == 1
    assert value("reelrank_model_loaded", model="obs-test-model", alias="champion",
                 version="1") == 0
