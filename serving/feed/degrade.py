"""What a feed request had to do without, and where its time went.

A failed or slow dependency never fails the request: the pipeline records the component in a
:class:`Trace` and carries on with a fallback. The response then carries
``X-Reelrank-Degraded: ranker,features,...`` and ``Server-Timing`` (per stage, in ms), and the
Prometheus counter ``reelrank_feed_degraded_total{component}`` and the histogram
``reelrank_feed_stage_seconds{feed, stage}`` (observed here only, in :meth:`Trace.add`) count
it for dashboards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from core.tracing import span

log = logging.getLogger(__name__)

DEGRADED = Counter("reelrank_feed_degraded", "Feed responses served without a component",
                   ["component"])
STAGE = Histogram("reelrank_feed_stage_seconds", "Time per feed pipeline stage",
                  ["feed", "stage"],
                  buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
# Which model ranked each for-you first page (``version`` is ``name/version``, or the cheap
# fallback's name when the ranker was down or late): the versions actually served, by alias.
RANKED_BY = Counter("reelrank_feed_ranked_pages", "For-you first pages by ranker alias and version",
                    ["alias", "version"])
HEADER = "X-Reelrank-Degraded"
RANKED_HEADER = "X-Reelrank-Ranked"  # candidates the first page ranked (benchmarks count them)
LOG_EVERY_S = 60.0  # an outage is logged once a minute per component, not once per request
_last_log: dict[str, float] = {}


def _warn(component: str, why: object) -> None:
    now = time.monotonic()
    if now - _last_log.get(component, -LOG_EVERY_S) >= LOG_EVERY_S:
        _last_log[component] = now
        log.warning("feed degraded: %s (%s)", component,
                    repr(why) if isinstance(why, BaseException) else why)


@dataclass
class Trace:
    degraded: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds
    ranked: int | None = None  # candidates scored for a first page
    started: float = field(default_factory=time.perf_counter)
    feed: str = "for_you"  # which feed's pipeline (for_you, trending, following)

    def elapsed_ms(self) -> float:
        """Milliseconds since the request's trace began (exposures log it for guardrails)."""
        return (time.perf_counter() - self.started) * 1000

    def degrade(self, component: str, why: object = None) -> None:
        if component not in self.degraded:
            self.degraded.append(component)
            DEGRADED.labels(component).inc()
            _warn(component, why)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (and trace it as a span when tracing is on)."""
        t = time.perf_counter()
        try:
            with span(f"{self.feed}.{name}"):
                yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds
        STAGE.labels(self.feed, name).observe(seconds)

    def headers(self) -> dict[str, str]:
        out = {"Server-Timing": ", ".join(f"{k};dur={v * 1000:.2f}"
                                          for k, v in self.stages.items())}
        if self.degraded:
            out[HEADER] = ",".join(self.degraded)
        if self.ranked is not None:
            out[RANKED_HEADER] = str(self.ranked)
        return out
