"""The embedded ``db://`` bus: a durable append-only log table in the relational database.

Same semantics as Kafka where the platform relies on them: keyed partitions with ordered
offsets, per-group committed offsets that survive restarts, and partitions split among the
live members of a group (heartbeats in ``bus_members``), re-split when one joins or leaves.

Appends lock their partition's ``bus_partitions`` row until commit, so offsets become
visible in order and a reader never skips a record that commits late.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from core.clock import now_ms
from platform_services.bus.base import (
    DEFAULT_PARTITIONS,
    Consumer,
    EventBus,
    Message,
    Record,
    next_offsets,
    partition_for,
)
from platform_services.bus.models import BusMember, BusOffset, BusPartition, BusRecord
from platform_services.storage.db import upsert_insert

IDLE_POLL_MIN_S, IDLE_POLL_MAX_S = 0.005, 0.25  # an idle consumer's waits between reads
_PARTITION_ENDS = select(BusPartition.topic, BusPartition.partition, BusPartition.next_offset) \
    .where(BusPartition.topic.in_(bindparam("topics", expanding=True)))


def insert_ignore(conn: Connection | Session, model: type, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL."""
    if rows:
        conn.execute(upsert_insert(conn, model).on_conflict_do_nothing(), rows)


class DbConsumer(Consumer):
    def __init__(self, bus: DbBus, group: str, topics: Sequence[str], session_timeout_ms: int):
        self._bus, self.group, self.topics = bus, group, list(topics)
        self.member_id = uuid.uuid4().hex
        self._session_ms = session_timeout_ms
        self._next_heartbeat = 0.0
        self._positions: dict[tuple[str, int], int] = {}
        # The idle back-off outlives a poll() call: workers call poll() in a loop with a
        # short timeout, and starting each call at the shortest wait had an idle consumer
        # read ~35 times a second (~33 ms of CPU a second per idle demo worker).
        self._wait_s = IDLE_POLL_MIN_S
        self._next_read = 0.0

    async def start(self) -> None:
        await self._bus.ensure_topics(self.topics)
        await asyncio.to_thread(self._heartbeat, True)

    def _heartbeat(self, force: bool = False) -> None:
        """Refresh membership and recompute this member's share of the partitions."""
        now = now_ms()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self._session_ms / 3
        with self._bus.engine.begin() as conn:
            stmt = update(BusMember).where(
                BusMember.group == self.group, BusMember.member_id == self.member_id
            )
            if not conn.execute(stmt.values(heartbeat_ms=now)).rowcount:
                insert_ignore(
                    conn,
                    BusMember,
                    [{"group": self.group, "member_id": self.member_id, "heartbeat_ms": now}],
                )
            conn.execute(
                delete(BusMember).where(
                    BusMember.group == self.group, BusMember.heartbeat_ms < now - self._session_ms
                )
            )
            members = sorted(
                conn.scalars(select(BusMember.member_id).where(BusMember.group == self.group))
            )
            partitions = sorted(
                (t, p)
                for t, p in conn.execute(
                    select(BusPartition.topic, BusPartition.partition).where(
                        BusPartition.topic.in_(self.topics)
                    )
                )
            )
            mine = {
                tp for i, tp in enumerate(partitions) if members[i % len(members)] == self.member_id
            }
            added = mine - self._positions.keys()
            committed = self._bus.committed(conn, self.group, added)
        self._positions = {tp: self._positions.get(tp, committed.get(tp, 0)) for tp in mine}

    def _poll(self, max_records: int) -> list[Record]:
        """Up to ``max_records`` from this member's partitions in (topic, partition, offset)
        order. The partitions' ``next_offset`` (one small indexed read) says which have
        anything new, so an idle consumer - which polls often - reads no records table: a
        query per partition made ten idle demo workers cost a core between them."""
        self._heartbeat()
        out: list[Record] = []
        with self._bus.engine.connect() as conn:
            ends = {(t, p): n for t, p, n in conn.execute(
                _PARTITION_ENDS, {"topics": sorted({t for t, _ in self._positions})})}
            for (topic, part), pos in sorted(self._positions.items()):
                if len(out) >= max_records:
                    break
                if ends.get((topic, part), 0) <= pos:
                    continue
                rows = conn.execute(
                    select(BusRecord)
                    .where(
                        BusRecord.topic == topic,
                        BusRecord.partition == part,
                        BusRecord.offset >= pos,
                    )
                    .order_by(BusRecord.offset)
                    .limit(max_records - len(out))
                ).all()
                out.extend(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms)
                    for r in rows
                )
                if rows:
                    self._positions[(topic, part)] = rows[-1].offset + 1
        return out

    async def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Records as soon as there are some, else ``[]`` after ``timeout_ms``. While
        nothing comes the reads space out (doubling up to ``IDLE_POLL_MAX_S``, across
        calls); a read that finds records resets that."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            now = time.monotonic()
            if now >= self._next_read:
                records = await asyncio.to_thread(self._poll, max_records)
                if records:
                    self._wait_s, self._next_read = IDLE_POLL_MIN_S, 0.0
                    return records
                now = time.monotonic()
                self._next_read = now + self._wait_s
                self._wait_s = min(self._wait_s * 2, IDLE_POLL_MAX_S)
            if now >= deadline:
                return []
            await asyncio.sleep(min(self._next_read, deadline) - now)

    async def commit(self, records: Sequence[Record]) -> None:
        offsets = next_offsets(records)
        if offsets:
            await asyncio.to_thread(self._bus.commit, self.group, offsets)

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._positions)

    async def lag(self) -> dict[tuple[str, int], int]:
        return await asyncio.to_thread(self._bus.lag, self.group, self.assignment())

    async def stop(self) -> None:
        def leave() -> None:
            with self._bus.engine.begin() as conn:
                conn.execute(
                    delete(BusMember).where(
                        BusMember.group == self.group, BusMember.member_id == self.member_id
                    )
                )

        await asyncio.to_thread(leave)
        self._positions = {}


class DbBus(EventBus):
    """The ``db://`` backend over the application's own database engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._partitions: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ensure_topics(
        self, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS
    ) -> None:
        await asyncio.to_thread(self._ensure, list(topics), partitions)

    def _ensure(self, topics: list[str], partitions: int) -> None:
        missing = [t for t in topics if t not in self._partitions]
        if not missing:
            return
        with self.engine.begin() as conn:
            insert_ignore(
                conn,
                BusPartition,
                [
                    {"topic": t, "partition": p, "next_offset": 0}
                    for t in missing
                    for p in range(partitions)
                ],
            )
            counts = conn.execute(
                select(BusPartition.topic, func.count())
                .where(BusPartition.topic.in_(missing))
                .group_by(BusPartition.topic)
            )
            self._partitions.update({t: n for t, n in counts})

    async def publish(self, messages: Sequence[Message]) -> None:
        if messages:
            await asyncio.to_thread(self.publish_sync, messages)

    def publish_sync(self, messages: Sequence[Message]) -> None:
        self._ensure(sorted({m.topic for m in messages}), DEFAULT_PARTITIONS)
        by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for m in messages:
            by_partition[(m.topic, partition_for(m.key, self._partitions[m.topic]))].append(m)
        now = now_ms()
        with self.engine.begin() as conn:
            rows = []
            for (topic, part), msgs in sorted(by_partition.items()):
                end = conn.execute(
                    update(BusPartition)
                    .where(BusPartition.topic == topic, BusPartition.partition == part)
                    .values(next_offset=BusPartition.next_offset + len(msgs))
                    .returning(BusPartition.next_offset)
                ).scalar_one()
                start = end - len(msgs)
                rows += [
                    {
                        "topic": topic,
                        "partition": part,
                        "offset": start + i,
                        "key": m.key,
                        "value": m.value,
                        "timestamp_ms": now,
                    }
                    for i, m in enumerate(msgs)
                ]
            conn.execute(BusRecord.__table__.insert(), rows)

    @staticmethod
    def committed(
        conn: Connection, group: str, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        keys = list(partitions)
        if not keys:
            return {}
        rows = conn.execute(
            select(BusOffset.topic, BusOffset.partition, BusOffset.committed).where(
                BusOffset.group == group,
                tuple_(BusOffset.topic, BusOffset.partition).in_(keys),
            )
        )
        return {(t, p): c for t, p, c in rows}

    def commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Move committed offsets forward only (a late commit never rewinds a partition)."""
        with self.engine.begin() as conn:
            insert_ignore(
                conn,
                BusOffset,
                [
                    {"group": group, "topic": t, "partition": p, "committed": 0}
                    for (t, p) in offsets
                ],
            )
            for (t, p), off in offsets.items():
                conn.execute(
                    update(BusOffset)
                    .where(
                        BusOffset.group == group,
                        BusOffset.topic == t,
                        BusOffset.partition == p,
                        BusOffset.committed < off,
                    )
                    .values(committed=off)
                )

    def lag(self, group: str, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        with self.engine.connect() as conn:
            ends = conn.execute(
                select(BusPartition.topic, BusPartition.partition, BusPartition.next_offset).where(
                    tuple_(BusPartition.topic, BusPartition.partition).in_(list(partitions))
                )
            )
            committed = self.committed(conn, group, partitions)
        return {(t, p): end - committed.get((t, p), 0) for t, p, end in ends}

    def consumer(
        self, group: str, topics: Sequence[str], *, session_timeout_ms: int = 10_000
    ) -> Consumer:
        return DbConsumer(self, group, topics, session_timeout_ms)
