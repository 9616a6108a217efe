"""Faults against the API, the outbox relay and the counters worker as real processes on the
Kafka bus (tansu, its log on S3), with Redis as a real server (see :mod:`benchmarks.faults`):
a worker and then the broker killed with ``kill -9`` mid-stream, Redis stopped. The API
answers every request throughout, and after recovery the books reconcile: nothing lost,
nothing applied twice. Then a full blob disk: a 507, and nothing half-written.

Covered elsewhere, not repeated here: ``kill -9`` of a worker with 10,000 queued events on both
buses (``tests/platform_services/bus/test_bus_contract.py``), of the transcode worker
(``tests/platform_services/media/test_transcode_worker.py``); the for-you feed with Redis down
or without its ranker (in-process fallback; ``tests/serving/test_for_you.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import disk_full, faults
from tests.reliability.conftest import form


def test_faults_lose_nothing_and_the_api_keeps_answering(tmp_path: Path) -> None:
    result = faults(tmp_path / "faults", phase_s=form(1.5, 10))
    for phase in result["phases"]:
        answers = phase["answers"]
        assert answers and set(answers) == {200}, phase  # no 5xx, no dropped connection
    by_fault = {p["fault"].split()[0]: p for p in result["phases"]}
    # Each fault really hit: a backlog built up while it lasted.
    assert by_fault["kill"]["unapplied"] > 0, "the worker was killed with events in flight"
    assert by_fault["Kafka"]["unpublished"] > 0, "writes were accepted while the broker was out"
    assert by_fault["Redis"]["limiter_failed_open"] > 0, "the rate limiter failed open"
    books = result["books"]
    assert books["committed_events"] > 100 and books["unpublished"] == 0
    assert books["lost_writes"] == 0 and books["lost_events"] == 0
    assert books["applied"] == books["committed_events"], "each event applied exactly once"
    assert books["counter_mismatches"] == 0, books


def test_a_full_blob_disk_is_507_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    result = disk_full(tmp_path)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    status, body = result["too_big"]
    assert status == 507 and "storage_full" in body
    assert result["files_left"] == [], "no partial file"
    assert result["small"] == 200 and result["stored"] == ["small.mp4"], "usable again"
