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
import logging

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utcnow
from core.events import Event, encode
from platform_services.bus.base import EventBus, Message
from platform_services.bus.models import OutboxRow

log = logging.getLogger(__name__)


def emit(session: Session, *events: Event) -> None:
    """Stage events in the caller's transaction; they exist only if it commits.

    A Core ``INSERT`` in the session's transaction, not ``session.add``: the ORM's flush of
    an outbox row cost a like more than the insert itself (``reelrank bench social``)."""
    if events:
        session.execute(insert(OutboxRow.__table__), [
            {"topic": e.topic, "key": e.key, "value": encode(e), "created_at": utcnow()}
            for e in events])


class OutboxRelay:
    """Publishes committed outbox rows to the bus, oldest first."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, batch_size: int = 1000):
        self.sessions, self.bus, self.batch_size = sessions, bus, batch_size

    def _pending(self) -> list[OutboxRow]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.published_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self.batch_size)
                )
            )

    def _mark(self, ids: list[int]) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids))
                .values(published_at=utcnow())
            )

    async def run_once(self) -> int:
        """Publish one batch; returns how many rows it sent."""
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            return 0
        await self.bus.publish([Message(r.topic, r.key, r.value) for r in rows])
        await asyncio.to_thread(self._mark, [r.id for r in rows])
        return len(rows)

    async def run(self, stop: asyncio.Event, idle_s: float = 0.05) -> None:
        """Relay until ``stop`` is set; bus errors are logged and retried with backoff."""
        delay = idle_s
        while not stop.is_set():
            try:
                sent = await self.run_once()
                delay = idle_s
            except Exception:
                log.exception("outbox relay: publish failed; retrying in %.1fs", delay)
                sent, delay = 0, min(delay * 2, 10.0)
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
