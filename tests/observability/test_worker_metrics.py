"""A real ``reelrank worker counters`` process: its ``/metrics`` on the port the settings give
it (``worker_metrics_port`` + its index), the consumer-lag gauge and processed counter there,
its log lines as JSON naming the consumer; and the lag gauge measured while events wait."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core.cli import WORKERS
from core.config import load_settings
from core.events import Action, UserInteraction, encode
from platform_services.bus import Message
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.counters import apply_counts
from platform_services.runtime import Runtime
from platform_services.storage.db import migrate

BASE_PORT = 8110  # this suite's port range is 8110-8119
TOPIC = "user.interaction"


def likes(n: int) -> list[Message]:
    events = [UserInteraction(user_id=i % 7, action=Action.LIKE, video_id=i % 5)
              for i in range(n)]
    return [Message(e.topic, e.key, encode(e)) for e in events]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def worker_env(tmp_path: Path) -> dict[str, str]:
    values = {"env": "test", "jwt_secret": "t" * 32,
              "database_url": f"sqlite:///{tmp_path}/state.db", "event_bus_url": "db://",
              "worker_metrics_port": str(BASE_PORT)}
    return {f"REELRANK_{k.upper()}": v for k, v in values.items()}


async def test_worker_serves_metrics_and_logs_json(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    settings = load_settings(**{k.removeprefix("REELRANK_").lower(): v for k, v in env.items()})
    migrate(settings.database_url)
    rt = Runtime.from_settings(settings)
    await rt.bus.ensure_topics([TOPIC])
    await rt.bus.publish(likes(30))
    port = BASE_PORT + list(WORKERS).index("counters")
    log_path = tmp_path / "worker.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REELRANK_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from core.cli import main; main()", "worker", "counters"],
            env={**clean, **env}, stdout=log, stderr=log)
    try:
        processed, lag, deadline = 0.0, None, time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            processed = sum(v for (n, labels), v in samples.items()
                            if n == "reelrank_events_processed_total"
                            and ("consumer", "counters") in labels)
            lag = [v for (n, labels), v in samples.items()
                   if n == "reelrank_consumer_lag" and ("consumer", "counters") in labels]
            if processed == 30 and lag:
                break
            await asyncio.sleep(0.3)
        assert processed == 30, log_path.read_text()[-2000:]
        assert lag, "the lag gauge is set by the worker loop"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await rt.close()
    lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    started = [x for x in lines if x["message"] == "worker started"]
    assert started and started[0]["consumer"] == "counters" and started[0]["level"] == "INFO"
    assert any(x["message"] == "worker stopped" for x in lines)


async def test_lag_gauge_counts_waiting_events(tmp_path: Path) -> None:
    """Events published before the group commits anything are its lag; after the worker
    applied them the gauge falls to 0."""
    settings = load_settings(env="test", jwt_secret="t" * 32,
                             database_url=f"sqlite:///{tmp_path}/state.db", event_bus_url="db://")
    migrate(settings.database_url)
    rt = Runtime.from_settings(settings)
    try:
        await rt.bus.ensure_topics([TOPIC])
        consumer = rt.bus.consumer("obs-lag", [TOPIC], session_timeout_ms=6_000)
        await consumer.start()
        await rt.bus.publish(likes(25))
        await consumer.poll(1, 100)  # joins the group, commits nothing
        waiting = sum((await consumer.lag()).values())
        await consumer.stop()
        assert waiting == 25

        def lag() -> float:
            return sum(s.value for fam in REGISTRY.collect() if fam.name == "reelrank_consumer_lag"
                       for s in fam.samples if s.labels.get("consumer") == "obs-lag")

        seen: list[float] = []  # the gauge as each batch starts (batches of 5, gauge each loop)

        def handler(session, events) -> None:  # noqa: ANN001
            seen.append(lag())
            apply_counts(session, events)

        stop = asyncio.Event()
        config = WorkerConfig(max_batch=5, poll_timeout_ms=50, lag_every_s=0.0,
                              session_timeout_ms=6_000)
        worker = Worker("obs-lag", [TOPIC], handler, rt.bus, rt.sessions, config)
        task = asyncio.create_task(worker.run(stop))

        deadline = time.monotonic() + 30
        while (REGISTRY.get_sample_value("reelrank_events_processed_total",
                                         {"consumer": "obs-lag", "topic": TOPIC}) or 0) < 25 \
                or lag() != 0:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert lag() == 0
        assert max(seen) >= 10 and seen[1:] == sorted(seen[1:], reverse=True), seen
    finally:
        await rt.close()


def test_worker_metrics_port_defaults_and_a_busy_port() -> None:
    from core.metrics import serve_worker_metrics

    assert load_settings(env="test", jwt_secret="t" * 32).worker_metrics_base_port == 0
    assert load_settings(env="dev").worker_metrics_base_port == 9100
    assert load_settings(env="dev", worker_metrics_port=0).worker_metrics_base_port == 0
    port = BASE_PORT + 9
    server = serve_worker_metrics(port)
    assert server is not None and server.server_port == port
    try:
        assert serve_worker_metrics(port) is None, "a second member on the port: logged, no crash"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            assert b"reelrank_events_processed" in r.read()
    finally:
        server.shutdown()
        server.server_close()
