"""The consumer framework: polling, batching, retries, dead-lettering and idempotency.

A consumer is a function of a batch of decoded events and a DB session. The framework runs
it in one transaction together with the insert of the events' ids into ``processed_events``,
so a redelivered event (after a crash, a rebalance or a duplicate publish) is skipped, never
applied twice. An event that cannot be decoded, or whose handler keeps failing after
``max_attempts`` tries, goes to ``<topic>.dlq`` with the reason; the rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
from prometheus_client import Counter, Gauge
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.events import Event, EventDecodeError, decode, dlq_topic
from core.logging import kv, log_context
from platform_services.bus.base import EventBus, Message, Record
from platform_services.bus.models import ProcessedEvent

log = logging.getLogger(__name__)

Handler = Callable[[Session, list[Event]], None]
# Errors that mean a dependency (database, Redis, network) is down, not that the event is bad.
TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

PROCESSED = Counter("reelrank_events_processed", "Events applied", ["consumer", "topic"])
SKIPPED = Counter("reelrank_events_duplicate", "Redelivered events skipped", ["consumer", "topic"])
FAILED = Counter("reelrank_events_failed", "Handler attempts that raised", ["consumer", "topic"])
DEAD = Counter("reelrank_events_dead_lettered", "Events sent to a DLQ", ["consumer", "topic"])
LAG = Gauge(
    "reelrank_consumer_lag", "Records not yet committed", ["consumer", "topic", "partition"]
)


@dataclass(frozen=True)
class WorkerConfig:
    max_batch: int = 500
    poll_timeout_ms: int = 200
    # After a batch short of ``max_batch``, wait this long for more (Kafka's
    # ``fetch.max.wait.ms``): a batch's fixed costs (offsets, dedupe, a transaction) were most
    # of a worker's CPU when it polled again at once for the few records that came meanwhile.
    linger_s: float = 0.05
    max_attempts: int = 3
    backoff_s: float = 0.1
    session_timeout_ms: int = 10_000
    lag_every_s: float = 5.0


@dataclass
class Worker:
    """One member of consumer group ``name`` applying ``handler`` to ``topics``."""

    name: str
    topics: Sequence[str]
    handler: Handler
    bus: EventBus
    sessions: sessionmaker[Session]
    config: WorkerConfig = field(default_factory=WorkerConfig)
    # A reason to dead-letter an event that decoded but must not be applied (e.g. stamped far
    # in the future), checked before the handler sees it; ``None`` admits it.
    admit: Callable[[Event], str | None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the in-flight batch finishes and commits first."""
        await self.bus.ensure_topics([*self.topics, *map(dlq_topic, self.topics)])
        consumer = self.bus.consumer(
            self.name, self.topics, session_timeout_ms=self.config.session_timeout_ms
        )
        await consumer.start()
        log.info("worker started", extra=kv(consumer=self.name, topics=",".join(self.topics)))
        loop = asyncio.get_running_loop()
        next_lag = 0.0
        try:
            self._stop = stop
            while not stop.is_set():
                records = await consumer.poll(self.config.max_batch, self.config.poll_timeout_ms)
                if records:
                    try:
                        await self.process(records)
                    except TRANSIENT:
                        if stop.is_set():  # outage at shutdown: uncommitted, redelivered later
                            break
                        raise
                    await consumer.commit(records)
                if 0 < len(records) < self.config.max_batch and self.config.linger_s:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.config.linger_s)
                if loop.time() >= next_lag:
                    next_lag = loop.time() + self.config.lag_every_s
                    for (topic, part), lag in (await consumer.lag()).items():
                        LAG.labels(self.name, topic, str(part)).set(lag)
        finally:
            await consumer.stop()
            log.info("worker stopped", extra=kv(consumer=self.name))

    async def process(self, records: Sequence[Record]) -> None:
        """Apply a batch; poison records are dead-lettered. Raises only if the DLQ is down."""
        good: list[tuple[Record, Event]] = []
        dead: list[tuple[Record, str]] = []
        for r in records:
            try:
                event = decode(r.value)
                if event.topic != r.topic:
                    raise EventDecodeError(f"{event.type} event on topic {r.topic}")
                reason = self.admit(event) if self.admit is not None else None
                if reason:
                    dead.append((r, reason))
                    continue
                good.append((r, event))
            except EventDecodeError as exc:
                dead.append((r, str(exc)))
        # Every line the handlers log names the consumer, the topic(s) and the event (a batch of
        # one, or each event when a failed batch is retried one by one).
        context: dict[str, object] = {"consumer": self.name, "batch": len(good),
                                      "topic": ",".join(sorted({r.topic for r in records}))}
        if len(good) == 1:
            context["event_id"] = str(good[0][1].event_id)
        with log_context(**context):
            if good and await self._apply_with_retries([e for _, e in good], attempts=1):
                log.warning("batch failed; retrying events one by one",
                            extra=kv(consumer=self.name))
                for r, event in good:
                    with log_context(event_id=str(event.event_id), topic=event.topic):
                        reason = await self._apply_with_retries([event],
                                                                self.config.max_attempts)
                    if reason:
                        dead.append((r, reason))
        if dead:
            await self._dead_letter(dead)

    async def _apply_with_retries(self, events: list[Event], attempts: int) -> str | None:
        """Apply with backoff; the error's text if it fails ``attempts`` times.

        A dependency outage (:data:`TRANSIENT`) is not the event's fault: it never counts as
        an attempt and is retried until the dependency is back or the worker is stopping.
        """
        failures, delay = 0, self.config.backoff_s
        while True:
            try:
                await asyncio.to_thread(self._apply, events)
                return None
            except TRANSIENT as exc:
                if self._stop.is_set():
                    raise
                log.warning(
                    "dependency unavailable; retrying",
                    extra=kv(consumer=self.name, error=type(exc).__name__, retry_in_s=delay),
                )
            except Exception as exc:
                FAILED.labels(self.name, events[0].topic).inc()
                failures += 1
                log.warning(
                    "handler failed",
                    extra=kv(consumer=self.name, event_id=events[0].event_id, attempt=failures),
                )
                if failures >= attempts:
                    return f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _apply(self, events: list[Event]) -> None:
        """Skip already-processed ids, record the rest and apply them, all in one transaction."""
        unique = list({str(e.event_id): e for e in events}.items())
        for attempt in range(2):
            try:
                with self.sessions.begin() as session:
                    seen = set(
                        session.scalars(
                            select(ProcessedEvent.event_id).where(
                                ProcessedEvent.consumer == self.name,
                                ProcessedEvent.event_id.in_([i for i, _ in unique]),
                            )
                        )
                    )
                    fresh = [e for i, e in unique if i not in seen]
                    if fresh:
                        session.execute(
                            insert(ProcessedEvent),
                            [{"consumer": self.name, "event_id": i} for i, e in unique
                             if i not in seen],
                        )  # fmt: skip
                        self.handler(session, fresh)
                break
            except IntegrityError:  # another member applied some of them concurrently
                if attempt:
                    raise
        for e in fresh:
            PROCESSED.labels(self.name, e.topic).inc()
        if len(fresh) < len(events):
            SKIPPED.labels(self.name, events[0].topic).inc(len(events) - len(fresh))

    async def _dead_letter(self, dead: list[tuple[Record, str]]) -> None:
        messages = []
        for r, reason in dead:
            DEAD.labels(self.name, r.topic).inc()
            log.error(
                "dead-lettered",
                extra=kv(consumer=self.name, topic=r.topic, offset=r.offset, reason=reason),
            )
            body = {
                "consumer": self.name,
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "error": reason,
                "payload": r.value.decode("utf-8", errors="replace"),
            }
            messages.append(Message(dlq_topic(r.topic), r.key, json.dumps(body).encode()))
        await self.bus.publish(messages)
