"""Kafka backend (aiokafka): topics per event type, keyed partitions, group commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaConnectionError, TopicAlreadyExistsError

from platform_services.bus.base import (
    DEFAULT_PARTITIONS,
    Consumer,
    EventBus,
    Message,
    Record,
    next_offsets,
)

log = logging.getLogger(__name__)
# How long the broker may hold a fetch that has less than ``fetch_min_bytes`` (1) to return:
# Kafka's own default. Kafka answers as soon as any record is there, so this costs no latency
# on a real cluster. tansu with its log on S3 (the fault suite's broker) holds every fetch to
# the deadline instead and returns what it read from S3 by then: at 100 ms a restarted worker
# drained a 1,000-event backlog at 21-60 events/s, at 500 ms at ~300/s (measured with a
# fresh consumer group, 4 partitions of 4-event batches); its tailing latency went from
# p50 160 to 234 ms.
FETCH_MAX_WAIT_MS = 500
MAX_BACKOFF_S = 2.0


async def _start_with_backoff(client: object, what: str, attempts: int = 40) -> None:
    """A broker that is down at start-up: retry with exponential backoff, one log line each.

    The delay stops growing at :data:`MAX_BACKOFF_S`: a worker restarted during a broker
    outage reconnects within 2 s of the broker's return (with a 10 s cap it sat out up to
    8 s more while its backlog grew); 40 attempts span ~75 s before it gives up."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            await client.start()  # type: ignore[attr-defined]
            return
        except KafkaConnectionError as exc:
            if attempt == attempts:
                raise
            log.warning("%s: broker unreachable (%s); retry %d in %.1fs", what, exc, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


class KafkaConsumer(Consumer):
    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], session_timeout_ms: int,
                 fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS):
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 6),
            rebalance_timeout_ms=session_timeout_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )

    async def start(self) -> None:
        await _start_with_backoff(self._consumer, "kafka consumer")

    async def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, (m.key or b"").decode(), m.value, m.timestamp)
            for msgs in batches.values()
            for m in msgs
        ]

    async def commit(self, records: Sequence[Record]) -> None:
        offsets = {TopicPartition(t, p): o for (t, p), o in next_offsets(records).items()}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:  # partitions moved to another member: it redelivers
            log.warning("commit failed after a rebalance; records will be redelivered: %s", exc)

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def lag(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            committed = await self._consumer.committed(tp) or 0
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - committed)
        return out

    async def stop(self) -> None:
        await self._consumer.stop()


class KafkaBus(EventBus):
    def __init__(self, bootstrap: str, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS):
        self.bootstrap = bootstrap
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            # Idempotent/transactional producers are off: not every Kafka-protocol broker
            # (tansu) supports them, and consumers deduplicate by event id anyway.
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,
                linger_ms=5,
                max_batch_size=1 << 20,
            )
            await _start_with_backoff(producer, "kafka producer")
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ensure_topics(
        self, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS
    ) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await _start_with_backoff(admin, "kafka admin")
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(t, num_partitions=partitions, replication_factor=1)
                for t in dict.fromkeys(topics)
                if t not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()

    async def publish(self, messages: Sequence[Message]) -> None:
        await self.start()
        assert self._producer is not None
        futures = [
            await self._producer.send(m.topic, m.value, key=m.key.encode()) for m in messages
        ]
        if futures:
            await asyncio.gather(*futures)

    def consumer(
        self, group: str, topics: Sequence[str], *, session_timeout_ms: int = 10_000
    ) -> Consumer:
        return KafkaConsumer(self.bootstrap, group, topics, session_timeout_ms,
                             self.fetch_max_wait_ms)
