"""``reelrank bench bus``: end-to-end events/s and produce-to-apply latency per backend.

End to end = publish → poll → idempotent apply (the ``counters`` handler with the
processed-id insert, in one transaction) → commit. The baseline in the same run is the bare
bus (publish → poll → commit, nothing applied), so the ratio is the framework's cost.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from benchmarks.report import table, write_report
from core.events import Action, UserInteraction, encode
from platform_services.bus import EventBus, Message, open_bus
from platform_services.bus.models import ProcessedEvent
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.counters import apply_counts
from platform_services.storage.db import make_engine, migrate, session_factory

TOPIC = "user.interaction"


def _messages(n: int, offset: int = 0) -> list[Message]:
    out = []
    for i in range(offset, offset + n):
        e = UserInteraction(user_id=i % 1000, action=Action.LIKE, video_id=i % 500)
        out.append(Message(e.topic, e.key, encode(e)))
    return out


@asynccontextmanager
async def _backend(kind: str, root: Path) -> AsyncIterator[tuple[EventBus, object]]:
    """A fresh bus and state DB for one measurement."""
    root.mkdir(parents=True, exist_ok=True)
    with _bus_url(kind, root) as (bus_url, db_url):
        migrate(db_url)
        engine = make_engine(db_url)
        bus = open_bus(bus_url, engine)
        await bus.start()
        await bus.ensure_topics([TOPIC, f"{TOPIC}.dlq"])
        try:
            yield bus, session_factory(engine)
        finally:
            await bus.stop()
            engine.dispose()


@contextmanager
def _bus_url(kind: str, root: Path):  # noqa: ANN202 - yields (bus_url, db_url)
    sqlite = f"sqlite:///{root}/state.db"
    if kind == "kafka":
        from benchmarks.servers import tansu

        with tansu(root) as bootstrap:
            yield f"kafka://{bootstrap}", sqlite
    elif kind == "db-postgres":
        from benchmarks.servers import start_postgres
        from platform_services.storage import procs

        # Its own top-level temp dir: the server runs as 'nobody' when we are root.
        pg_root = Path(tempfile.mkdtemp(prefix="reelrank-pg-"))
        server = start_postgres(pg_root)
        try:
            yield "db://", server.create_database()
        finally:
            procs.stop(server.proc, signal.SIGINT)
            shutil.rmtree(pg_root, ignore_errors=True)
    else:
        yield "db://", sqlite


async def _wait(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark consumer did not catch up")
        await asyncio.sleep(0.01)


async def _throughput(kind: str, root: Path, n: int, batch: int, apply: bool) -> float:
    """Events/s from the first publish until all ``n`` are applied (or committed, bare)."""
    async with _backend(kind, root) as (bus, sessions):
        msgs = _messages(n)
        seen = 0
        stop = asyncio.Event()
        if apply:
            worker = Worker("bench", [TOPIC], apply_counts, bus, sessions,
                            WorkerConfig(max_batch=batch, poll_timeout_ms=50))  # fmt: skip

            def count() -> int:
                with sessions() as s:
                    return s.scalar(select(func.count()).select_from(ProcessedEvent)) or 0

            task = asyncio.create_task(worker.run(stop))
            progress = count
        else:
            consumer = bus.consumer("bench-bare", [TOPIC], session_timeout_ms=6000)
            await consumer.start()

            async def drain() -> None:
                nonlocal seen
                while not stop.is_set():
                    records = await consumer.poll(batch, 50)
                    await consumer.commit(records)
                    seen += len(records)

            task = asyncio.create_task(drain())
            progress = lambda: seen  # noqa: E731
        # Warm up: the clock starts once the consumer has joined and applied one event.
        await bus.publish(_messages(1, n))
        await _wait(lambda: progress() >= 1, 60)
        done = lambda: progress() >= n + 1  # noqa: E731
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            await bus.publish(msgs[i : i + batch])
        await _wait(done, 300)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        if not apply:
            await consumer.stop()
        return n / elapsed


async def _latency(kind: str, root: Path, rate: int, seconds: float) -> tuple[float, float]:
    """p50/p99 ms from an event's creation to its apply, publishing ``rate`` events/s."""
    latencies: list[float] = []

    def timed(session, events) -> None:  # noqa: ANN001
        apply_counts(session, events)
        now = datetime.now(UTC)
        latencies.extend((now - e.occurred_at).total_seconds() * 1000 for e in events)

    async with _backend(kind, root) as (bus, sessions):
        stop = asyncio.Event()
        worker = Worker("bench-lat", [TOPIC], timed, bus, sessions,
                        WorkerConfig(max_batch=1000, poll_timeout_ms=50))  # fmt: skip
        task = asyncio.create_task(worker.run(stop))
        await bus.publish(_messages(1, 10**9))  # warm-up: wait until the consumer is live
        await _wait(lambda: len(latencies) >= 1, 60)
        latencies.clear()
        tick, per_tick = 0.01, max(1, rate // 100)
        total = int(rate * seconds)
        start = time.perf_counter()
        for i in range(0, total, per_tick):
            await bus.publish(_messages(per_tick, i))  # occurred_at = now
            await asyncio.sleep(max(0.0, start + (i // per_tick + 1) * tick - time.perf_counter()))
        await _wait(lambda: len(latencies) >= total, 60)
        stop.set()
        await task
    p50, p99 = np.percentile(latencies, [50, 99])
    return float(p50), float(p99)


async def run_bench(kinds: list[str], n: int) -> str:
    for name in ("platform_services", "alembic", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows, lat_rows = [], []
    with tempfile.TemporaryDirectory(prefix="reelrank-bench-") as tmp:
        root = Path(tmp)
        for kind in kinds:
            for batch in (1, 100, 1000):
                size = min(n, 2000) if batch == 1 else n
                full = await _throughput(kind, root / f"{kind}-{batch}-a", size, batch, True)
                bare = await _throughput(kind, root / f"{kind}-{batch}-b", size, batch, False)
                rows.append([kind, batch, size, round(full), round(bare), full / bare])
                print(f"{kind} batch={batch}: {full:,.0f} ev/s end to end, {bare:,.0f} bare")
            p50, p99 = await _latency(kind, root / f"{kind}-lat", 1000, 5.0)
            lat_rows.append([kind, 1000, p50, p99])
            print(f"{kind} latency at 1000 ev/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return (
        "## Throughput\n\nEnd to end = publish → poll → idempotent apply (counters + processed-id "
        "insert, one transaction) → commit. Bare = publish → poll → commit (the baseline).\n\n"
        + table(
            ["backend", "batch", "events", "end-to-end ev/s", "bare bus ev/s", "ratio e2e/bare"],
            rows,
        )
        + "\n\n## Produce-to-apply latency at 1,000 events/s (5 s)\n\n"
        + table(["backend", "rate ev/s", "p50 ms", "p99 ms"], lat_rows)
        + "\n\nGoals: ≥ 20,000 ev/s on Kafka, ≥ 5,000 ev/s on db:// (SQLite), p99 < 1 s.\n"
    )


def bench_bus(backends: str = "db-sqlite,db-postgres,kafka", events: int = 20_000) -> None:
    """Run the bus benchmark and write benchmarks/results/bus.md."""
    body = asyncio.run(run_bench(backends.split(","), events))
    print(write_report("bus", "Event bus benchmark", body))
