"""A benchmark report says what produced it: the machine, the date and the command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.report import write_report


def test_a_report_names_the_command_that_produced_it(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/reelrank", "bench", "serve", "--videos",
                                      "3000", "--out", "results/serve demo.md"])
    text = write_report("serve", "Serving", "body", tmp_path).read_text()
    head = text.splitlines()
    assert head[0] == "# Serving" and head[2].startswith("- date: ")
    assert head[3].startswith("- machine: ") and head[5] == "" and head[-1] == "body"
    assert head[4] == ("- command: `reelrank bench serve --videos 3000 "
                       "--out 'results/serve demo.md'`")
    monkeypatch.setattr(sys, "argv", ["-c", "bench", "social"])  # python -c "... main()"
    assert "- command: `reelrank bench social`" in write_report("s", "S", "b", tmp_path).read_text()


def test_cached_pages_are_set_against_the_floor_of_the_same_rate() -> None:
    """``bench serve``'s floor table: each backend's cached pages beside the framework floor's
    at the same rate, CPU as their ratio; a rate the floor failed (or lacks) has no row."""
    from benchmarks.serve import _floor_rows, _row

    def row(backend: str, rate: int, api_ms: float, p99: float = 3.0) -> list[object]:
        s = {"throughput": float(rate), "success": 1.0, "p50": 1.0, "p95": 2.0, "p99": p99,
             "degraded": 0.0, "held": True, "ranked_mean": float("nan"), "ranked_min": -1,
             "pages_per_call": "-", "cpu_ms": {"api": api_ms, "redis": 0.25}, "reasons": []}
        return _row(backend, "cached", rate, s)

    failed = ["floor", "cached", 500] + ["-"] * 10 + ["failed: timeout"]
    rows = _floor_rows([row("local", 250, 2.75, 40.0), row("floor", 250, 0.25),
                        row("ray", 500, 3.0), failed, row("local", 1000, 2.0)])
    assert rows == [["local", 250, 250.0, 40.0, 3.0, 250.0, 3.0, 0.5, "6.00x"]]
