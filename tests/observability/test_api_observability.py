"""The API's observability through the real app: the per-route latency histogram (labelled by
path template), request ids (validated, echoed, on every log line of the request as JSON), and
the rate-limit counter on a real 429."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from core.logging import configure_logging
from platform_services.storage.db import migrate
from serving.app import create_app
from tests.serving.conftest import signup

LATENCY = "reelrank_http_request_duration_seconds"


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as parsed samples: (name, sorted labels) -> value."""
    r = client.get("/metrics/")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def count(samples: dict, route: str, method: str, status: str) -> float:
    key = (f"{LATENCY}_count", (("method", method), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


@pytest.fixture
def json_settings(settings: Settings) -> Iterator[Settings]:
    """Settings with JSON logs, and this process's logging set up as the CLI does (INFO, our
    stderr handler), put back as it was afterwards."""
    migrate(settings.database_url)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("INFO", "json")
    try:
        yield settings.model_copy(update={"log_format": "json",
                                          "rate_limit_signup": "3/minute"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def client(json_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(json_settings, feed_services=False)) as c:
        yield c


def test_latency_histogram_is_labelled_by_route_template(client: TestClient) -> None:
    headers = signup(client, "ana")
    before = scrape(client)
    for user_id in (1, 2, 99):  # three raw paths, one route
        client.get(f"/api/v1/users/{user_id}", headers=headers)
    client.get("/api/v1/no-such-route/123")
    after = scrape(client)
    route = "/api/v1/users/{user_id}"
    seen = count(after, route, "GET", "2xx") + count(after, route, "GET", "4xx")
    assert seen - count(before, route, "GET", "2xx") - count(before, route, "GET", "4xx") == 3
    assert count(after, route, "GET", "4xx") > count(before, route, "GET", "4xx")  # user 99
    assert count(after, "<unmatched>", "GET", "4xx") >= 1
    routes = {dict(labels).get("route") for (name, labels) in after if name.startswith(LATENCY)}
    assert not any(r and r.startswith("/api/v1/users/") and r[-1].isdigit() for r in routes), \
        "raw paths must never become label values"
    bucket = (f"{LATENCY}_bucket", (("le", "+Inf"), ("method", "GET"), ("route", route),
                                    ("status", "2xx")))
    assert after[bucket] == count(after, route, "GET", "2xx")


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_request_id_is_echoed_and_on_every_log_line(json_settings: Settings,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    app = create_app(json_settings, feed_services=False)

    @app.get("/test-logs")
    def logs_something() -> dict[str, str]:  # a sync route: runs on a worker thread
        logging.getLogger("reelrank.test").warning("inside the handler")
        return {"ok": "yes"}

    with TestClient(app) as c:
        capfd.readouterr()
        r = c.get("/test-logs", headers={"X-Request-ID": "client-id.42:a_b"})
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "client-id.42:a_b"
        forged = c.get("/healthz", headers={"X-Request-ID": "bad id {}" + "x" * 200})
        generated = c.get("/healthz")
        lines = json_lines(capfd.readouterr().err)
    for resp in (forged, generated):
        rid = resp.headers["X-Request-ID"]
        assert len(rid) == 32 and int(rid, 16) >= 0, "unsafe or missing ids are replaced"
    assert forged.headers["X-Request-ID"] != generated.headers["X-Request-ID"]
    mine = [x for x in lines if x.get("request_id") == "client-id.42:a_b"]
    handler = [x for x in mine if x["message"] == "inside the handler"]
    access = [x for x in mine if x["logger"] == "reelrank.access"]
    assert handler and handler[0]["level"] == "WARNING" and "time" in handler[0]
    assert len(access) == 1
    assert access[0]["method"] == "GET" and access[0]["route"] == "/test-logs"
    assert access[0]["status"] == 200 and access[0]["duration_ms"] >= 0
    healthz = [x for x in lines if x.get("route") == "/healthz"]
    assert {x["request_id"] for x in healthz} == {forged.headers["X-Request-ID"],
                                                   generated.headers["X-Request-ID"]}


def test_a_429_counts_in_the_rate_limit_counter(client: TestClient) -> None:
    before = REGISTRY.get_sample_value("reelrank_rate_limited_total", {"limit": "signup"}) or 0
    statuses = []
    for i in range(5):
        body = {"username": f"user{i}", "email": f"u{i}@example.com", "password": "longenough1"}
        statuses.append(client.post("/api/v1/auth/register", json=body).status_code)
    assert statuses == [201, 201, 201, 429, 429]
    after = REGISTRY.get_sample_value("reelrank_rate_limited_total", {"limit": "signup"})
    assert after == before + 2
    samples = scrape(client)
    assert count(samples, "/api/v1/auth/register", "POST", "4xx") >= 2
    assert samples[("reelrank_rate_limited_total", (("limit", "signup"),))] == after


def test_a_process_counts_as_ready_from_its_startup_to_its_shutdown(
        json_settings: Settings) -> None:
    """``reelrank_api_processes_ready``: 1 once the lifespan startup is done (what the demo
    waits for in every process before it says it is serving), 0 after the shutdown."""
    with TestClient(create_app(json_settings, feed_services=False)) as c:
        assert scrape(c)[("reelrank_api_processes_ready", ())] == 1
    assert REGISTRY.get_sample_value("reelrank_api_processes_ready") == 0


def test_chatty_library_loggers_show_warnings_only_unless_debug() -> None:
    """Feast's registry refreshes and httpx's line per request stay out of a terminal at INFO
    (they buried the demo's and the simulator's progress lines); their warnings still show,
    and ``-v`` (DEBUG) shows everything."""
    from core.logging import CHATTY_LOGGERS

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        configure_logging("INFO")
        for name in CHATTY_LOGGERS:
            lib = logging.getLogger(name)
            assert lib.isEnabledFor(logging.WARNING) and not lib.isEnabledFor(logging.INFO)
        assert logging.getLogger("reelrank.access").isEnabledFor(logging.INFO)
        configure_logging("DEBUG")
        assert all(logging.getLogger(n).isEnabledFor(logging.DEBUG) for n in CHATTY_LOGGERS)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
