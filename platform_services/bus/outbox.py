"""Transactional outbox: state changes and their events commit together.

A service calls :func:`emit` inside the transaction that changes its state. The relay then
publishes committed rows in id order and marks them sent. A crash after the commit and before
the publish loses nothing (the row is still unsent and the relay publishes it on restart); a
crash after the publish and before the mark publishes it twice, which consumers absorb by
event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Row, bindparam, insert, literal_column, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from core.events import Event, encode
from platform_services.bus.base import EventBus, Message
from platform_services.bus.models import OutboxRow

log = logging.getLogger(__name__)
_TABLE = OutboxRow.__table__
_INSERT = insert(_TABLE)  # built once: a statement's cache key is kept with it
IDLE_MAX_S = 0.25  # an idle relay's longest wait between reads of the outbox
# The relay's statements, built once, as Core (rows, not ORM objects): a relay batch is three
# small transactions, and building and compiling them each time was most of their cost.
_OUTBOX = _TABLE.c
_PENDING = select(_OUTBOX.id, _OUTBOX.topic, _OUTBOX.key, _OUTBOX.value) \
    .where(_OUTBOX.published_at.is_(None)).order_by(_OUTBOX.id).limit(bindparam("n"))
_MARK = update(_TABLE).where(_OUTBOX.id.in_(bindparam("ids", expanding=True))) \
    .values(published_at=bindparam("at"))
BUFFERED = Counter("reelrank_outbox_buffered_events",
                   "Events of an OutboxBuffer by what became of them (written|dropped)",
                   ["buffer", "result"])


def emit(session: Session, *events: Event) -> None:
    """Stage events in the caller's transaction; they exist only if it commits.

    A Core ``INSERT`` in the session's transaction, not ``session.add``: the ORM's flush of
    an outbox row cost a like more than the insert itself (``reelrank bench social``)."""
    if events:
        session.execute(_INSERT, [outbox_values(e) for e in events])


def outbox_values(event: Event) -> dict[str, Any]:
    """The outbox row of ``event``: the parameters of :func:`emit_if_changed`'s statement."""
    return {"topic": event.topic, "key": event.key, "value": encode(event),
            "created_at": utcnow()}


_OUTBOX_COLUMNS = ("topic", "key", "value", "created_at")


def emit_if_changed(change: Any) -> Any:
    """One statement that makes ``change`` (an ``INSERT``/``DELETE ... RETURNING``) and stages
    its event only if the change returned a row: ``WITH changed AS (change) INSERT INTO
    outbox SELECT :topic, :key, :value, :created_at FROM changed RETURNING 1`` (PostgreSQL's
    data-modifying CTE). Bound with the change's values and :func:`outbox_values`; a row
    comes back if it changed something. One statement is atomic without a transaction, so a
    toggle needs one round trip where a transaction's BEGIN, change, event and COMMIT took
    four."""
    changed = change.cte("changed")
    values = select(*(bindparam(c, type_=_OUTBOX[c].type) for c in _OUTBOX_COLUMNS))
    return (insert(_TABLE).from_select(_OUTBOX_COLUMNS, values.select_from(changed))
            .returning(literal_column("1")))


class OutboxRelay:
    """Publishes committed outbox rows to the bus, oldest first."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, batch_size: int = 1000):
        self.sessions, self.bus, self.batch_size = sessions, bus, batch_size

    def _pending(self) -> list[Row]:
        with self.sessions() as s:
            return list(s.execute(_PENDING, {"n": self.batch_size}))

    def _mark(self, ids: list[int]) -> None:
        with self.sessions.begin() as s:
            s.execute(_MARK, {"ids": ids, "at": utcnow()})

    async def run_once(self) -> int:
        """Publish one batch; returns how many rows it sent."""
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            return 0
        await self.bus.publish([Message(r.topic, r.key, r.value) for r in rows])
        await asyncio.to_thread(self._mark, [r.id for r in rows])
        return len(rows)

    async def run(self, stop: asyncio.Event, idle_s: float = 0.05) -> None:
        """Relay until ``stop`` is set; bus errors are logged and retried with backoff.
        After a batch short of ``batch_size`` it waits ``idle_s`` (Kafka's ``linger.ms``):
        relaying as fast as rows came made batches of a few rows, and each batch's fixed
        reads and writes cost more than its rows (300 likes/s on PostgreSQL: 1.7 ms of
        relay and counters CPU a like, 0.9 with the wait and the consumer's). An idle relay
        read the outbox every ``idle_s`` (20 times a second, ~30 ms of CPU a second); while
        nothing comes the wait doubles up to ``IDLE_MAX_S``."""
        delay = idle_s
        while not stop.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("outbox relay: publish failed; retrying in %.1fs", delay)
                sent, delay = 0, min(delay * 2, 10.0)
            else:  # an empty outbox is read less and less often, up to IDLE_MAX_S apart
                delay = idle_s if sent else min(max(delay, idle_s) * 2, IDLE_MAX_S)
            if sent < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)


class OutboxBuffer:
    """Events of a high-volume log (the feeds' exposures) written to the outbox in batches by
    a background thread: one transaction every ``interval_s`` instead of one per request.

    They record what was served and change no state of their own, so nothing needs them in
    the request's transaction, and a page does not wait on the database for them (their
    insert and commit were ~9 % of a cached page's API CPU: 2.95 ms with them, 2.70 without,
    cached pages at 250/s on the ``bench serve`` world, one run). The
    price, by design: a crash loses up to ``interval_s`` of them (a clean :meth:`close`
    writes them all), a reader sees one up to ``interval_s`` late, and while the database is
    down they wait in memory, the oldest dropped past ``max_pending`` (counted in
    ``reelrank_outbox_buffered_events{result="dropped"}``)."""

    CHUNK = 2000  # events per transaction when a backlog is written

    def __init__(self, sessions: sessionmaker[Session], name: str, interval_s: float,
                 max_pending: int = 100_000) -> None:
        self.sessions, self.name, self.interval_s = sessions, name, interval_s
        self.max_pending = max_pending
        self._pending: deque[dict[str, Any]] = deque()  # outbox rows
        self._lock = threading.Lock()  # the deque's swaps and trims
        self._writing = threading.Lock()  # one writer at a time: events stay in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outbox-buffer-{name}",
                                        daemon=True)
        self._thread.start()

    def put(self, *events: Event) -> None:
        """Queue ``events`` (encoded now, so a bad one fails its caller); the next flush
        writes them."""
        rows = [outbox_values(e) for e in events]
        with self._lock:
            self._pending.extend(rows)
            dropped = self._trim()
        if dropped:
            BUFFERED.labels(self.name, "dropped").inc(dropped)

    def flush(self) -> int:
        """Write what is queued now, oldest first, ``CHUNK`` events a transaction; returns
        how many were written. On a database error the rest go back to the front of the
        queue (logged; the next flush retries them)."""
        written = 0
        with self._writing:
            with self._lock:
                rows, self._pending = self._pending, deque()
            try:
                while rows:
                    n = min(self.CHUNK, len(rows))
                    with self.sessions.begin() as s:
                        s.execute(_INSERT, list(itertools.islice(rows, n)))
                    for _ in range(n):
                        rows.popleft()
                    written += n
            except SQLAlchemyError as exc:
                log.warning("outbox buffer %s: %d events wait for the database (%r)",
                            self.name, len(rows), exc)
            finally:
                if rows:
                    with self._lock:
                        self._pending.extendleft(reversed(rows))
                        dropped = self._trim()
                    if dropped:
                        BUFFERED.labels(self.name, "dropped").inc(dropped)
                if written:
                    BUFFERED.labels(self.name, "written").inc(written)
        return written

    def close(self) -> None:
        """Stop the thread and write what is left (once: a database still down loses it)."""
        self._stop.set()
        self._thread.join()
        self.flush()

    def _trim(self) -> int:
        """Drop the oldest past ``max_pending`` (holding ``_lock``); how many went."""
        over = len(self._pending) - self.max_pending
        for _ in range(over):
            self._pending.popleft()
        return max(over, 0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:  # never let the writer die: the queue would only grow
                log.exception("outbox buffer %s: flush failed", self.name)
