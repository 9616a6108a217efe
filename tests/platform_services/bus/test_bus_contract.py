"""One suite, every bus backend: db:// on SQLite and PostgreSQL, and kafka:// on tansu.

These are the guarantees ARCHITECTURE.md's data flow stands on: nothing lost, nothing
applied twice, poison isolated, partitions shared and taken over within a group.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from core.events import Action, UserInteraction, encode
from platform_services.bus import Message
from platform_services.bus.models import OutboxRow, ProcessedEvent
from platform_services.bus.outbox import OutboxRelay, emit
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.counters import apply_counts
from platform_services.runtime import Runtime
from platform_services.storage.models import VideoStats

TOPIC = "user.interaction"
FAST = WorkerConfig(poll_timeout_ms=100, backoff_s=0.01, session_timeout_ms=6_000)


def likes(n: int, users: int = 50, videos: int = 20) -> list[UserInteraction]:
    return [
        UserInteraction(user_id=i % users, action=Action.LIKE, video_id=i % videos)
        for i in range(n)
    ]


def messages(events: list[UserInteraction]) -> list[Message]:
    return [Message(e.topic, e.key, encode(e)) for e in events]


def total_likes(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.coalesce(func.sum(VideoStats.likes), 0))) or 0


def processed(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(ProcessedEvent)) or 0


async def run_until(worker: Worker, done, timeout_s: float = 60) -> None:  # noqa: ANN001
    """Run ``worker`` until ``done()`` is true, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "worker did not finish in time"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def counters_worker(rt: Runtime, handler=apply_counts) -> Worker:  # noqa: ANN001
    return Worker("counters", [TOPIC], handler, rt.bus, rt.sessions, FAST)


async def read_all(rt: Runtime, topic: str, n: int, timeout_s: float = 30) -> list:
    consumer = rt.bus.consumer(f"reader-{time.monotonic_ns()}", [topic], session_timeout_ms=6_000)
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            out += await consumer.poll(1000, 200)
    finally:
        await consumer.stop()
    return out


async def test_keyed_order_and_resume_from_committed(rt: Runtime) -> None:
    events = [
        UserInteraction(user_id=i % 7, action=Action.WATCH, video_id=i, watch_ms=i)
        for i in range(300)
    ]
    await rt.bus.ensure_topics([TOPIC])
    await rt.bus.publish(messages(events))
    first = rt.bus.consumer("g", [TOPIC], session_timeout_ms=6_000)
    await first.start()
    got: list = []
    while len(got) < 100:
        got += await first.poll(50, 500)
    await first.commit(got)
    await first.stop()

    second = rt.bus.consumer("g", [TOPIC], session_timeout_ms=6_000)
    await second.start()
    rest: list = []
    deadline = time.monotonic() + 30
    while len(got) + len(rest) < 300 and time.monotonic() < deadline:
        rest += await second.poll(500, 200)
    await second.stop()
    assert len(got) + len(rest) == 300, "records lost or duplicated across a committed restart"
    by_user: dict[str, list[int]] = {}
    for r in got + rest:
        by_user.setdefault(r.key, []).append(json.loads(r.value)["watch_ms"])
    assert all(v == sorted(v) for v in by_user.values()), "per-key order broken"


async def test_redelivery_is_applied_once(rt: Runtime) -> None:
    events = likes(500)
    await rt.bus.publish(messages(events) + messages(events[:200]))  # 200 duplicates
    await run_until(counters_worker(rt), lambda: processed(rt) >= 500)
    await asyncio.sleep(0.5)
    assert total_likes(rt) == 500


async def test_poison_is_dead_lettered_and_the_rest_applied(rt: Runtime) -> None:
    def handler(session, events) -> None:  # noqa: ANN001
        if any(e.video_id == 13 for e in events):
            raise RuntimeError("video 13 breaks the handler")
        apply_counts(session, events)

    good = likes(40, videos=10)  # video ids 0..9
    bad_handler = UserInteraction(user_id=1, action=Action.LIKE, video_id=13)
    bad_version = json.loads(encode(good[0]))
    bad_version.update(version=99, event_id="00000000-0000-0000-0000-000000000001")
    raw = [
        Message(TOPIC, "1", b"{not json"),
        Message(TOPIC, "1", json.dumps(bad_version).encode()),
        *messages([bad_handler]),
    ]
    await rt.bus.publish(raw[:2] + messages(good[:20]) + raw[2:] + messages(good[20:]))
    worker = Worker("counters", [TOPIC], handler, rt.bus, rt.sessions, FAST)
    labels = {"consumer": "counters", "topic": TOPIC}
    dead_before = REGISTRY.get_sample_value("reelrank_events_dead_lettered_total", labels) or 0
    await run_until(worker, lambda: total_likes(rt) >= 40)
    assert total_likes(rt) == 40

    dlq = await read_all(rt, f"{TOPIC}.dlq", 3)
    reasons = sorted(json.loads(r.value)["error"] for r in dlq)
    assert len(dlq) == 3, reasons
    assert any("malformed JSON" in r for r in reasons)
    assert any("unknown version 99" in r for r in reasons)
    assert any("video 13 breaks" in r for r in reasons)
    assert all(json.loads(r.value)["payload"] for r in dlq), "DLQ keeps the original payload"
    dead_after = REGISTRY.get_sample_value("reelrank_events_dead_lettered_total", labels)
    assert dead_after - dead_before == 3, "the dead-letter metric counts them"


async def test_outbox_survives_a_crash_between_commit_and_publish(rt: Runtime) -> None:
    events = likes(30)
    with rt.sessions.begin() as s:
        emit(s, *events)
    # The process "crashed" here: committed, never published. A new relay finds the rows.
    relay = OutboxRelay(rt.sessions, rt.bus, batch_size=7)
    while await relay.run_once():
        pass
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).where(OutboxRow.published_at.is_(None))) == 0
    # A crash after publish and before the mark publishes again: consumers absorb it.
    await rt.bus.publish(messages(events[:10]))
    await run_until(counters_worker(rt), lambda: total_likes(rt) >= 30)
    await asyncio.sleep(0.5)
    assert total_likes(rt) == 30


async def test_rolled_back_transaction_emits_nothing(rt: Runtime) -> None:
    with pytest.raises(RuntimeError), rt.sessions.begin() as s:
        emit(s, *likes(3))
        raise RuntimeError("the state change failed")
    assert await OutboxRelay(rt.sessions, rt.bus).run_once() == 0


async def test_group_members_share_partitions_and_take_over(rt: Runtime) -> None:
    await rt.bus.ensure_topics([TOPIC], partitions=4)
    a = counters_worker(rt)
    b = counters_worker(rt)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    task_b = asyncio.create_task(b.run(stop_b))
    events = likes(2000, users=400)
    await rt.bus.publish(messages(events[:1000]))
    deadline = time.monotonic() + 60
    while total_likes(rt) < 1000:
        assert time.monotonic() < deadline, f"only {total_likes(rt)} of 1000 applied"
        await asyncio.sleep(0.2)
    with rt.sessions() as s:
        per_member = s.execute(
            select(ProcessedEvent.consumer, func.count()).group_by(ProcessedEvent.consumer)
        ).all()
    assert per_member == [("counters", 1000)]
    stop_a.set()
    await asyncio.wait_for(task_a, 30)
    await rt.bus.publish(messages(events[1000:]))  # b must take over a's partitions
    while total_likes(rt) < 2000:
        assert time.monotonic() < deadline + 60, f"only {total_likes(rt)} of 2000 applied"
        await asyncio.sleep(0.2)
    stop_b.set()
    await asyncio.wait_for(task_b, 30)
    assert total_likes(rt) == 2000


async def test_two_members_split_the_partitions(rt: Runtime) -> None:
    await rt.bus.ensure_topics([TOPIC], partitions=4)
    a = rt.bus.consumer("split", [TOPIC], session_timeout_ms=6_000)
    b = rt.bus.consumer("split", [TOPIC], session_timeout_ms=6_000)
    await rt.bus.publish(messages(likes(200, users=100)))
    await asyncio.gather(a.start(), b.start())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.gather(a.poll(10, 100), b.poll(10, 100))  # drives heartbeats/rebalance
        if len(a.assignment()) == 2 and len(b.assignment()) == 2:
            break
    assert a.assignment().isdisjoint(b.assignment())
    assert len(a.assignment() | b.assignment()) == 4
    await asyncio.gather(a.stop(), b.stop())


async def test_sigkill_mid_stream_then_restart_applies_each_event_once(
    rt: Runtime, worker_env: dict[str, str], tmp_path: Path
) -> None:
    n = 10_000
    await rt.bus.ensure_topics([TOPIC])
    await rt.bus.publish(messages(likes(n, users=500, videos=100)))
    cmd = [str(Path(sys.executable).with_name("reelrank")), "worker", "counters"]
    env = {**os.environ, **worker_env}
    log_path = tmp_path / "worker.log"

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)

    async def wait_for(target: int, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while total_likes(rt) < target:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, f"{total_likes(rt)} of {target} applied"
            await asyncio.sleep(0.05)

    proc = start()
    try:
        await wait_for(n // 5, proc, 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert total_likes(rt) < n, "killed too late to test a mid-stream crash"
        proc = start()
        await wait_for(n, proc, 120)
        await asyncio.sleep(1.0)
        assert total_likes(rt) == n
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "SIGTERM must finish the batch and exit cleanly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_dependency_outage_is_retried_not_dead_lettered(rt: Runtime) -> None:
    outage = {"left": 5}

    def flaky(session, events) -> None:  # noqa: ANN001
        if outage["left"]:
            outage["left"] -= 1
            raise ConnectionError("redis is down")
        apply_counts(session, events)

    await rt.bus.publish(messages(likes(10)))
    worker = Worker("counters", [TOPIC], flaky, rt.bus, rt.sessions, FAST)
    await run_until(worker, lambda: total_likes(rt) >= 10)
    assert total_likes(rt) == 10 and outage["left"] == 0
    assert await read_all(rt, f"{TOPIC}.dlq", 1, timeout_s=2) == []
