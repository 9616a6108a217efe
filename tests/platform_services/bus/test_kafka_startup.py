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


def test_kafka_url_options_are_parsed_and_bounded() -> None:
    from platform_services.bus import open_bus
    from platform_services.bus.kafka import FETCH_MAX_WAIT_MS, KafkaBus

    bus = open_bus("kafka://127.0.0.1:9092,127.0.0.1:9093?fetch_max_wait_ms=250",
                   None)  # type: ignore[arg-type]
    assert isinstance(bus, KafkaBus)
    assert (bus.bootstrap, bus.fetch_max_wait_ms) == ("127.0.0.1:9092,127.0.0.1:9093", 250)
    plain = open_bus("kafka://127.0.0.1:9092/", None)  # type: ignore[arg-type]
    assert (plain.bootstrap, plain.fetch_max_wait_ms) == ("127.0.0.1:9092", FETCH_MAX_WAIT_MS)
    for query, named in (("fetch_max_wait_ms=0", "fetch_max_wait_ms"),
                         ("fetch_max_wait_ms=1e3", "fetch_max_wait_ms"),
                         ("linger_ms=5", "linger_ms")):
        with pytest.raises(ValueError, match=named):
            open_bus(f"kafka://127.0.0.1:9092?{query}", None)  # type: ignore[arg-type]
