"""Smoke tests of the real services the conftest starts for the rest of the suite."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def test_kafka_produce_and_consume_in_a_group(kafka_bootstrap: str) -> None:
    async def roundtrip() -> tuple[bytes | None, bytes | None]:
        # tansu has no idempotent producer; its group joins take about half the session
        # timeout, hence the short one.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait("smoke", b"hello", key=b"user-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "smoke",
            bootstrap_servers=kafka_bootstrap,
            group_id="smoke-test",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=20)
            await consumer.commit()
            return record.key, record.value
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == (b"user-1", b"hello")
