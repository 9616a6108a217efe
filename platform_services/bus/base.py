"""The event-bus interface: topics of keyed records, consumer groups, manual commits.

Two backends implement it (chosen by ``event_bus_url``): Kafka through aiokafka, and a
durable log table in the relational database for the embedded mode. Both give at-least-once
delivery; workers make it effectively-once with an idempotency table (see ``worker.py``).
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Message:
    """A record to publish."""

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """A record read from a partition, with its offset."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    timestamp_ms: int


def partition_for(key: str, partitions: int) -> int:
    """Stable key → partition, so one user's events stay in order on one partition."""
    return zlib.crc32(key.encode()) % partitions


def next_offsets(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The offset to commit per partition: one past the highest record seen."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


class Consumer(abc.ABC):
    """One member of a consumer group."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Up to ``max_records`` records of the assigned partitions, in order per partition."""

    @abc.abstractmethod
    async def commit(self, records: Sequence[Record]) -> None:
        """Mark these records (and everything before them per partition) as processed."""

    @abc.abstractmethod
    def assignment(self) -> set[tuple[str, int]]: ...

    @abc.abstractmethod
    async def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: records not yet committed by this group."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group so that the others take over the partitions."""


class EventBus(abc.ABC):
    """Publish records and create consumers."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ensure_topics(
        self, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS
    ) -> None: ...

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Durably append every message (all done when this returns), keyed by partition."""

    @abc.abstractmethod
    def consumer(
        self, group: str, topics: Sequence[str], *, session_timeout_ms: int = 10_000
    ) -> Consumer: ...

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
