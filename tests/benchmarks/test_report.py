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
