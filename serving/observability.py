"""Per-request observability: the request id, the latency histogram by route, the access log.

:class:`RequestObservability` is a plain ASGI middleware (no ``BaseHTTPMiddleware``: it would
copy each body and cost a task per request). For every HTTP request it

- takes the client's ``X-Request-ID`` when it is a safe token (1-128 characters of
  ``A-Za-z0-9._:-``; anything else could forge log lines or blow up a log index) or makes one,
  puts it in the logging context (:func:`core.logging.log_context`: every record logged while
  the request runs carries it) and echoes it in the response's ``X-Request-ID``;
- observes the duration into ``reelrank_http_request_duration_seconds{method, route, status}``
  where ``route`` is the matched route's path template (``/api/v1/videos/{video_id}/like``,
  never the raw path: one series per route, not per video; ``/metrics/{path}`` for a mounted
  app, ``<unmatched>`` for a 404 of no route or a 413 refused before routing) and ``status``
  the class (``2xx``);
- logs one access line (``reelrank.access``): method, route, status, duration in ms;
- with a tracer (``otel_traces``, :mod:`core.tracing`), makes the request a server span named
  ``METHOD route`` (a child of the caller's ``traceparent`` if it sent one) with the request
  id, the route and the status, and makes the tracer the request's for the spans inside it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from prometheus_client import Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging import kv, log_context
from core.tracing import tracing

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
_SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "<unmatched>"  # 404s of unknown paths share one series

REQUEST_SECONDS = Histogram(
    "reelrank_http_request_duration_seconds", "API request latency by route template",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# 1 in each API process from the end of its startup (catalog, models, item features, the
# ranker warmed) until its shutdown; summed over the live processes. ``/healthz`` answers as
# soon as the first process is up, while the others may still be loading: this says how many
# are ready (the demo waits for all before it says it is serving).
PROCESSES_READY = Gauge("reelrank_api_processes_ready",
                        "API processes that finished starting and take requests",
                        multiprocess_mode="livesum")
access_log = logging.getLogger("reelrank.access")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id if it is safe to log, else a new one."""
    for key, value in headers:
        if key == _HEADER_KEY:
            text = value.decode("latin-1")
            if _SAFE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def route_template(scope: Scope, root_path: str = "") -> str:
    """The matched route's full path template, or a mounted app's prefix + ``/{path}``.

    ``root_path``: the scope's before routing. A route of an included router may carry its
    template without the router's prefix (FastAPI's own scope keys for it are private), so the
    prefix is the part of the request path in front of what the route's pattern matches.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if route is not None and template:
        regex = getattr(route, "path_regex", None)
        path = scope.get("path", "")
        path = path[len(root_path):] if path.startswith(root_path) else path
        if regex is None or regex.match(path):
            return str(template)
        for i in range(1, len(path)):
            if path[i] == "/" and regex.match(path[i:]):
                return path[:i] + str(template)
        return str(template)
    mounted = str(scope.get("root_path", ""))[len(root_path):]
    return f"{mounted}/{{path}}" if mounted else UNMATCHED


class RequestObservability:
    """ASGI middleware: request id in and out, latency by route, one access log line."""

    def __init__(self, app: ASGIApp, access: bool = True,
                 tracer: trace.Tracer | None = None) -> None:
        self.app, self.access, self.tracer = app, access, tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        root_path = str(scope.get("root_path", ""))
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER_KEY]
                headers.append((_HEADER_KEY, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id), self._span(scope, request_id) as finish:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                finish(self._record(scope, root_path, status, time.perf_counter() - started),
                       status)

    @contextmanager
    def _span(self, scope: Scope, request_id: str) -> Iterator[Callable[[str, int], None]]:
        """The request's server span when tracing is on; yields what names and closes it
        (``finish(route, status)``)."""
        if self.tracer is None:
            yield lambda route, status: None
            return
        method = scope.get("method", "")
        carrier = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        span = self.tracer.start_span(method, context=propagate.extract(carrier),
                                      kind=trace.SpanKind.SERVER,
                                      attributes={"http.request.method": method,
                                                  "reelrank.request_id": request_id})

        def finish(route: str, status: int) -> None:
            span.update_name(f"{method} {route}")
            span.set_attributes({"http.route": route, "http.response.status_code": status})
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)

        trace_id = format(span.get_span_context().trace_id, "032x")
        with (trace.use_span(span, end_on_exit=True), tracing(self.tracer),
              log_context(trace_id=trace_id)):
            yield finish

    def _record(self, scope: Scope, root_path: str, status: int, seconds: float) -> str:
        """Observe the latency, log the access line; the route template."""
        route, method = route_template(scope, root_path), scope.get("method", "")
        REQUEST_SECONDS.labels(method, route, f"{status // 100}xx").observe(seconds)
        if self.access:
            access_log.info("request", extra=kv(method=method, route=route,
                                                path=scope.get("path", ""), status=status,
                                                duration_ms=round(seconds * 1000, 3)))
        return route
