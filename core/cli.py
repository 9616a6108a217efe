"""The ``reelrank`` command root.

``core`` imports nothing of ours, so the packages above it attach their commands through the
``reelrank.commands`` entry-point group: each entry point is a ``register(groups)`` function
that adds commands to the named groups below.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from importlib.metadata import entry_points

import typer

from core.config import SettingsError, get_settings
from core.logging import configure_logging

GROUPS: dict[str, str] = {
    "db": "Create and migrate the relational database.",
    "data": "Import real data sets, generate the synthetic world, describe tables.",
    "train": "Train models (retrieval, ranker) and register them in MLflow.",
    "eval": "Evaluate registered models offline.",
    "index": "Build and inspect FAISS indexes.",
    "deploy": "Move model aliases (champion, challenger).",
    "serve": "Run the API and the Ray Serve deployments.",
    "features": "Apply, materialize and query the Feast feature store.",
    "experiment": "Define, run and analyse A/B experiments.",
    "bench": "Benchmarks; each writes benchmarks/results/<name>.md.",
}

app = typer.Typer(
    help="reelrank: the recommendation platform's command line.", no_args_is_help=True
)
groups: dict[str, typer.Typer] = {}
for _name, _help in GROUPS.items():
    groups[_name] = typer.Typer(help=_help, no_args_is_help=True)
    app.add_typer(groups[_name], name=_name)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    configure_logging("DEBUG" if verbose else "INFO")
    try:
        get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo() -> None:
    """Run the main job on embedded defaults (the steps registered so far)."""
    steps = sorted(entry_points(group="reelrank.demo"), key=lambda ep: ep.name)
    if not steps:
        typer.echo("no demo steps are installed")
    for ep in steps:
        typer.secho(f"== demo step {ep.name}", bold=True)
        ep.load()()


@app.command()
def worker(
    name: str = typer.Argument(..., help="Worker name (its consumer group)."),
    metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on this port (0: off)."),
) -> None:
    """Run a named worker until SIGTERM/SIGINT: the in-flight batch finishes and commits."""
    workers = {ep.name: ep for ep in entry_points(group="reelrank.workers")}
    if name not in workers:
        typer.echo(
            f"error: unknown worker {name!r} (known: {', '.join(sorted(workers))})", err=True
        )
        raise typer.Exit(2)
    run = workers[name].load()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(get_settings(), stop)

    asyncio.run(main())


# ``__root__`` lets a package add a top-level command (``reelrank recommend``).
for _ep in entry_points(group="reelrank.commands"):
    _ep.load()({**groups, "__root__": app})


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # raised lazily by commands that read settings
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
