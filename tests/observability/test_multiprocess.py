"""Several API processes, one ``/metrics``: processes started with ``PROMETHEUS_MULTIPROC_DIR``
(as :func:`serving.launch.run_api` starts uvicorn's workers) write their samples there and
each one's ``/metrics`` registry reports the sum; a process where a library set the variable
after ``prometheus_client`` was imported (feast does) keeps its own registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from core.metrics import MULTIPROC_ENV, process_registry

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
from core.metrics import multiprocess_dir, process_registry
from prometheus_client import REGISTRY
from serving.observability import REQUEST_SECONDS
assert multiprocess_dir() is not None and process_registry() is not REGISTRY
for _ in range({n}):
    REQUEST_SECONDS.labels("GET", "/api/v1/videos/{{video_id}}", "2xx").observe(0.02)
"""


def test_samples_of_all_processes_add_up(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", CHILD.format(n=n)], env=env, check=True,
                       cwd=ROOT, timeout=120)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    text = generate_latest(registry).decode()
    assert ('reelrank_http_request_duration_seconds_count{method="GET",'
            'route="/api/v1/videos/{video_id}",status="2xx"} 7.0') in text
    # This test process imported prometheus_client without the variable: setting it now
    # (what feast.metrics does on import) must not swap its registry for the directory's.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert process_registry() is REGISTRY
