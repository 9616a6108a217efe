"""Benchmark reports: a markdown file per benchmark, headed with the machine and the date."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path("benchmarks/results")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    return (
        f"{platform.node()} — {cpu}, {os.cpu_count()} cores{mem}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
    )


def command() -> str:
    """How this process was started, as typed (``reelrank bench serve --videos 3000 ...``):
    a report says what reproduces it."""
    prog = Path(sys.argv[0]).name
    return shlex.join(["reelrank" if prog in ("-c", "reelrank") else prog, *sys.argv[1:]])


def table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats get 4 significant digits."""

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(name: str, title: str, body: str, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results_dir/<name>.md`` and return its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.md"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# {title}\n\n- date: {stamp}\n- machine: {machine()}\n"
                    f"- command: `{command()}`\n\n{body.strip()}\n")
    return path
