"""The relay and the workers wait a moment after a short batch (Kafka's ``linger.ms`` and
``fetch.max.wait.ms``) instead of polling again at once for the few events that came
meanwhile, and go straight on after a full one (a backlog drains at full speed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from core.config import load_settings
from platform_services.bus.base import Message, Record
from platform_services.bus.db_log import IDLE_POLL_MAX_S
from platform_services.bus.outbox import IDLE_MAX_S, OutboxRelay
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.runtime import Runtime
from platform_services.storage.db import migrate

RUN_S = 0.3
LINGER_S = 0.1


async def _run_for(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    await asyncio.sleep(RUN_S)
    stop.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("batch", [1, 10])
def test_the_relay_lingers_after_a_short_batch(batch: int) -> None:
    relay = OutboxRelay(sessions=None, bus=None, batch_size=10)  # type: ignore[arg-type]
    calls = 0

    async def run_once() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return batch

    relay.run_once = run_once  # type: ignore[method-assign]
    asyncio.run(_run_for(lambda stop: relay.run(stop, idle_s=LINGER_S)))
    if batch < relay.batch_size:
        assert 2 <= calls <= RUN_S / LINGER_S + 1, calls
    else:
        assert calls > 20, calls


class _Consumer:
    """Returns ``batch`` records a poll, at once."""

    def __init__(self, batch: int) -> None:
        self.batch, self.polls = batch, 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        self.polls += 1
        await asyncio.sleep(0)
        return [Record("t", 0, self.polls * 10 + i, "k", b"{}", 0) for i in range(self.batch)]

    async def commit(self, records: list[Record]) -> None: ...

    async def lag(self) -> dict:
        return {}


class _Bus:
    def __init__(self, consumer: _Consumer) -> None:
        self._consumer = consumer

    async def ensure_topics(self, topics: list[str]) -> None: ...

    def consumer(self, *_, **__) -> _Consumer:  # noqa: ANN002, ANN003
        return self._consumer


@pytest.mark.parametrize("batch", [1, 10])
def test_a_worker_lingers_after_a_short_batch(batch: int) -> None:
    consumer = _Consumer(batch)
    worker = Worker("w", ["t"], handler=lambda *_: None, bus=_Bus(consumer),  # type: ignore[arg-type]
                    sessions=None, config=WorkerConfig(max_batch=10, linger_s=LINGER_S))  # type: ignore[arg-type]

    async def process(records: list[Record]) -> None:
        await asyncio.sleep(0)

    worker.process = process  # type: ignore[method-assign]
    asyncio.run(_run_for(worker.run))
    if batch < 10:
        assert 2 <= consumer.polls <= RUN_S / LINGER_S + 1, consumer.polls
    else:
        assert consumer.polls > 20, consumer.polls


def test_an_idle_relay_reads_the_outbox_less_and_less_often() -> None:
    """An empty outbox is read at waits doubling from ``idle_s`` up to ``IDLE_MAX_S`` (it
    was read every ``idle_s``: 20 times a second); rows put it back to ``idle_s``."""
    relay = OutboxRelay(sessions=None, bus=None, batch_size=10)  # type: ignore[arg-type]
    calls: list[float] = []

    async def run_once() -> int:
        calls.append(asyncio.get_running_loop().time())
        return 1 if len(calls) == 6 else 0

    relay.run_once = run_once  # type: ignore[method-assign]

    async def run(stop: asyncio.Event) -> None:
        await relay.run(stop, idle_s=0.01)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    waits = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert len(calls) <= 12, len(calls)  # every 10 ms: ~100
    assert waits[0] < waits[3] and max(waits) <= IDLE_MAX_S + 0.05, waits
    assert waits[5] < 0.05, waits  # after a batch: idle_s again


def test_an_idle_db_consumer_reads_less_and_less_often(tmp_path) -> None:  # noqa: ANN001
    """Workers call ``poll`` in a loop with a short timeout; an idle db-bus consumer's waits
    between reads keep doubling across those calls (each call started again at 5 ms: ~35
    reads a second per idle worker), and a new record still arrives within the longest
    wait."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/bus.db", event_bus_url="db://",
                             env="test", jwt_secret="t" * 32)
    migrate(settings.database_url)

    async def main() -> None:
        runtime = Runtime.from_settings(settings)
        consumer = runtime.bus.consumer("g", ["t"], session_timeout_ms=6000)
        await consumer.start()
        reads, read = 0, consumer._poll  # type: ignore[attr-defined]

        def counted(max_records: int) -> list[Record]:
            nonlocal reads
            reads += 1
            return read(max_records)

        consumer._poll = counted  # type: ignore[attr-defined]
        try:
            started = time.monotonic()
            while time.monotonic() - started < 1.2:
                assert await consumer.poll(100, 200) == []
            assert reads <= 12, reads  # 5, 10, 20 ... 250 ms apart
            await runtime.bus.publish([Message("t", "k", b"{}")])
            started, got = time.monotonic(), []
            while not got:
                got = await consumer.poll(100, 200)
            assert time.monotonic() - started <= IDLE_POLL_MAX_S + 0.2
            assert [r.value for r in got] == [b"{}"]
        finally:
            await consumer.stop()
            await runtime.close()

    asyncio.run(main())
