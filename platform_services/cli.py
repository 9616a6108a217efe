"""Commands of the platform services: ``bench bus``."""

from __future__ import annotations

import typer


def register(groups: dict[str, typer.Typer]) -> None:
    @groups["bench"].command("bus")
    def bench_bus(
        backends: str = typer.Option("db-sqlite,db-postgres,kafka", help="Comma-separated."),
        events: int = typer.Option(20_000, help="Events per throughput run."),
    ) -> None:
        """End-to-end events/s and latency per bus backend → benchmarks/results/bus.md."""
        from platform_services.bus.bench import bench_bus as run

        run(backends, events)
