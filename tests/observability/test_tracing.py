"""OpenTelemetry traces: the API exports a server span per request over OTLP/HTTP to a real
HTTP receiver (continuing the caller's trace), feed stages are child spans, and a bad
``otel_traces`` setting is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.config import Settings, SettingsError, load_settings
from core.tracing import tracing
from platform_services.storage.db import migrate
from serving.app import create_app
from serving.feed.degrade import Trace
from tests.serving.conftest import signup

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP trace receiver on a free port: the URL and what it received."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def _spans(received: list[ExportTraceServiceRequest]) -> list:
    return [s for req in received for rs in req.resource_spans for ss in rs.scope_spans
            for s in ss.spans]


def test_requests_are_server_spans_exported_over_otlp(settings: Settings, collector) -> None:
    url, received = collector
    migrate(settings.database_url)
    traced = settings.model_copy(update={"otel_traces": url,
                                         "otel_service_name": "api-under-test"})
    with TestClient(create_app(traced, feed_services=False)) as client:
        headers = signup(client, "tracy")
        r = client.get("/api/v1/users/me", headers={
            **headers, "traceparent": f"00-{TRACE_ID}-{PARENT}-01", "X-Request-ID": "req-7"})
        assert r.status_code == 200
        client.get("/api/v1/users/99999", headers=headers)
    # Leaving the client ran the app's shutdown, which flushed the batch to the receiver.
    spans = {s.name: s for s in _spans(received)}
    me = spans["GET /api/v1/users/me"]
    assert me.trace_id.hex() == TRACE_ID and me.parent_span_id.hex() == PARENT
    attrs = {a.key: a.value for a in me.attributes}
    assert attrs["http.route"].string_value == "/api/v1/users/me"
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["reelrank.request_id"].string_value == "req-7"
    missing = spans["GET /api/v1/users/{user_id}"]
    assert {a.key: a.value for a in missing.attributes}["http.response.status_code"].int_value \
        == 404
    assert missing.trace_id.hex() != TRACE_ID  # no traceparent: a trace of its own
    service = {a.key: a.value.string_value
               for req in received for rs in req.resource_spans for a in rs.resource.attributes}
    assert service["service.name"] == "api-under-test"


def test_feed_stages_are_child_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    trace = Trace()
    with tracing(tracer), tracer.start_as_current_span("GET /api/v1/feed/for-you"):
        with trace.stage("features"):
            pass
        with trace.stage("ranking"):
            pass
    Trace().stage("untraced").__enter__()  # outside a traced request: no span
    finished = {s.name: s for s in exporter.get_finished_spans()}
    root = finished.pop("GET /api/v1/feed/for-you")
    assert set(finished) == {"for_you.features", "for_you.ranking"}
    assert all(s.parent.span_id == root.context.span_id for s in finished.values())
    assert set(trace.stages) == {"features", "ranking"}  # the timings are kept as before


def test_a_bad_traces_setting_is_refused(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="otel_traces"):
        load_settings(otel_traces="jaeger:4318")
    assert load_settings(otel_traces="console").otel_traces == "console"
