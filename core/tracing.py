"""OpenTelemetry traces (optional: ``otel_traces``, off by default).

When on, every API request is a server span (continuing the caller's trace when it sends a
W3C ``traceparent``), named by its route template and carrying the request id, and each
stage of a feed request is a child span (:class:`serving.feed.degrade.Trace`), so one
for-you page shows where its time went next to the services it called. Spans are exported in
batches off the request path: as OTLP/HTTP to a collector (Jaeger, Tempo, the OpenTelemetry
Collector) or as JSON lines on stdout (``console``). When off, no span object is made at all:
the request path pays one context-variable read.

The tracer of the running request lives in a context variable, which Starlette's worker
threads inherit, so code deep in a request (the feed pipeline) opens spans without being
handed the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

_current: ContextVar[trace.Tracer | None] = ContextVar("reelrank_tracer", default=None)
OTLP_PATH = "/v1/traces"


def check_spec(spec: str) -> str:
    """``""`` (off), ``console`` or an OTLP/HTTP collector URL; anything else is refused."""
    if spec not in ("", "console") and not spec.startswith(("http://", "https://")):
        raise ValueError("use '' (off), 'console' or an OTLP/HTTP URL such as "
                         "http://collector:4318")
    return spec


def exporter_for(spec: str) -> SpanExporter:
    if spec == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = spec.rstrip("/")
    return OTLPSpanExporter(endpoint=endpoint if endpoint.endswith(OTLP_PATH)
                            else endpoint + OTLP_PATH)


def provider_for(spec: str, service: str) -> TracerProvider | None:
    """A tracer provider exporting to ``spec`` in batches, or ``None`` when tracing is off.
    The caller shuts it down (which flushes what is still queued)."""
    if not check_spec(spec):
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter_for(spec)))
    return provider


@contextmanager
def tracing(tracer: trace.Tracer) -> Iterator[None]:
    """Make ``tracer`` the one :func:`span` uses inside the block (a request's)."""
    token = _current.set(tracer)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def span(name: str) -> Iterator[None]:
    """A child span of the current one named ``name``, when the request is traced."""
    tracer = _current.get()
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name):
        yield
