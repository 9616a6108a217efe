"""The Grafana dashboard and the scrape config cannot drift from the code: every metric the
dashboard queries is registered by the modules that produce it, and every worker target of
``ops/prometheus.yml`` is at the port ``reelrank worker`` gives that worker."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from core.cli import WORKERS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "reelrank.json"
SCRAPE = ROOT / "ops" / "prometheus.yml"
# Every module that defines a metric the dashboard plots (importing registers them).
PRODUCERS = ("serving.app", "serving.observability", "serving.feed.degrade",
             "serving.routes.feed", "serving.ranking.models", "core.metrics",
             "platform_services.ratelimit", "platform_services.bus.worker",
             "platform_services.media.pipeline", "features.online", "features.freshness")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "summary": ("_count", "_sum", "")}


def exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "expr" and isinstance(v, str)] + \
            [e for v in node.values() for e in exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in exprs(v)]
    return []


def registered_series() -> set[str]:
    for module in PRODUCERS:
        importlib.import_module(module)
    return {fam.name + suffix for fam in REGISTRY.collect()
            for suffix in SUFFIXES.get(fam.type, ("",))}


def test_every_dashboard_metric_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = exprs(dashboard["panels"]) + exprs(dashboard["templating"])
    used = {m for q in queries for m in re.findall(r"\breelrank_[a-z0-9_]+", q)}
    assert len(used) >= 15, used
    missing = used - registered_series()
    assert not missing, f"the dashboard queries metrics nothing registers: {sorted(missing)}"
    for wanted in ("reelrank_http_request_duration_seconds_bucket",
                   "reelrank_feed_stage_seconds_bucket", "reelrank_cache_lookups_total",
                   "reelrank_consumer_lag", "reelrank_model_loaded",
                   "reelrank_feed_degraded_total", "reelrank_rate_limited_total",
                   "reelrank_events_processed_total", "reelrank_events_dead_lettered_total"):
        assert wanted in used, f"the dashboard must plot {wanted}"
    assert any(t["type"] == "datasource" for t in dashboard["templating"]["list"])


def test_scrape_config_lists_each_worker_at_its_port() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["reelrank-api"]["static_configs"][0]["targets"]
    listed = {c["labels"]["worker"]: int(c["targets"][0].rsplit(":", 1)[1])
              for c in jobs["reelrank-workers"]["static_configs"]}
    expected = {name: 9100 + i for i, name in enumerate(WORKERS)}
    assert listed == expected, "regenerate ops/prometheus.yml's worker targets from WORKERS"
