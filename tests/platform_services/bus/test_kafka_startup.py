"""A broker that is down at start-up: bounded retries with backoff and a log line each."""

from __future__ import annotations

import logging
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from benchmarks.servers import free_port
from platform_services.bus.kafka import _start_with_backoff


async def test_unreachable_broker_retries_with_backoff_then_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(KafkaConnectionError):
        await _start_with_backoff(producer, "test producer", attempts=3)
    await producer.stop()
    elapsed = time.monotonic() - started
    retries = [r for r in caplog.records if "broker unreachable" in r.getMessage()]
    assert len(retries) == 2, "one clear line per retry"
    assert elapsed >= 1.5, "backs off (0.5 s, then 1 s) instead of a busy loop"
