"""The relay and the workers wait a moment after a short batch (Kafka's ``linger.ms`` and
``fetch.max.wait.ms``) instead of polling again at once for the few events that came
meanwhile, and go straight on after a full one (a backlog drains at full speed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from platform_services.bus.base import Record
from platform_services.bus.outbox import OutboxRelay
from platform_services.bus.worker import Worker, WorkerConfig

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
