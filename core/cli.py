"""The ``reelrank`` command root, and the one place that says where every command lives.

``core`` imports nothing of ours statically, so the packages above it are named here as
``"module:attribute"`` strings and imported on use: ``COMMANDS`` are ``register(groups)``
functions that add commands to the named groups below, ``DEMO_STEPS`` are what ``reelrank
demo`` runs in order, ``WORKERS`` are what ``reelrank worker NAME`` runs.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from typing import Any

import typer

from core.config import SettingsError, get_settings
from core.heap import freeze_startup_heap
from core.logging import configure_logging
from core.metrics import serve_worker_metrics

# ``reelrank ...`` as a child process of this interpreter (an installed script may be missing).
CLI = [sys.executable, "-c", "from core.cli import main; main()"]
COMMANDS: tuple[str, ...] = (
    "platform_services.storage.cli:register",  # db
    "training.datasets.cli:register",  # data
    "training.datasets.world:register",  # data load
    "features.cli:register",  # features
    "training.retrieval.cli:register",  # train/eval retrieval, recommend
    "training.ranker.cli:register",  # train ranker, rank
    "candidate_gen.retrieval_cli:register",  # index build
    "serving.cli:register",  # serve api, deploy
    "benchmarks.cli:register",  # bench
    "candidate_gen.search_indexer:register",  # search reindex
    "experiments.cli:register",  # experiment create|start|stop|list|show|analyze
    "experiments.simulate_cli:register",  # experiment simulate|fit-users
)
DEMO_STEPS: tuple[tuple[str, str], ...] = (
    ("db", "platform_services.storage.cli:demo_step"),
    ("data", "training.datasets.cli:demo_step"),
    ("world", "training.datasets.world:demo_step"),
    ("search", "candidate_gen.search_indexer:demo_step"),
    ("retrieval", "serving.demo:train_retrieval"),
    ("features", "serving.demo:build_features"),
    ("ranker", "serving.demo:train_ranker"),
    ("deploy", "serving.demo:deploy_champions"),
    ("simulator", "serving.demo:fit_simulated_users"),
    ("serve", "serving.demo:serve"),
)
# Each is ``async def run(settings, stop)``; the name is also its consumer group.
WORKERS: dict[str, str] = {
    "relay": "platform_services.runtime:run_relay",
    "counters": "platform_services.runtime:run_counters",
    "trending": "platform_services.trending:run_worker",
    "features": "features.stream:run",
    "exposures": "experiments.exposures:run",
    "transcode": "platform_services.media.worker:run",
    "embed": "candidate_gen.embed_worker:run",
    "fanout": "platform_services.fanout:run_worker",
    "search": "candidate_gen.search_indexer:run",
    "notifications": "platform_services.notifications:run_worker",
    "features-refresh": "features.refresh:run",
}


def resolve(target: str) -> Any:
    """The attribute a ``"package.module:attribute"`` string names, imported now."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


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
    "search": "The search index (documents and their MiniLM vectors).",
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
        settings = get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(None, settings.log_format_resolved)


@app.command()
def demo(
    data: str = typer.Option("synth", help="synth (the generated world) or kuairand."),
    path: str = typer.Argument(None, help="The data set's directory (--data kuairand)."),
) -> None:
    """Run the main job on embedded defaults: world, models, index, then serve."""
    import os
    import time

    if data not in ("synth", "kuairand") or (data == "kuairand") != bool(path):
        typer.echo("error: --data synth, or --data kuairand PATH", err=True)
        raise typer.Exit(2)
    # The steps and the child processes read these settings.
    os.environ["REELRANK_DEMO_DATA"] = data
    if path:
        os.environ["REELRANK_DEMO_DATA_PATH"] = path
    get_settings.cache_clear()
    started = time.monotonic()
    for i, (name, step) in enumerate(DEMO_STEPS, 1):
        typer.secho(f"== demo step {i}/{len(DEMO_STEPS)} {name} "
                    f"(elapsed {time.monotonic() - started:.0f} s)", bold=True)
        resolve(step)()


@app.command()
def worker(
    name: str = typer.Argument(..., help="Worker name (its consumer group)."),
    metrics_port: int = typer.Option(
        0, help="Serve Prometheus metrics on this port (0: settings.worker_metrics_port, "
        "9100 unless env is test, + the worker's index; off when that is 0)."),
) -> None:
    """Run a named worker until SIGTERM/SIGINT: the in-flight batch finishes and commits."""
    if name not in WORKERS:
        typer.echo(
            f"error: unknown worker {name!r} (known: {', '.join(sorted(WORKERS))})", err=True
        )
        raise typer.Exit(2)
    run = resolve(WORKERS[name])
    settings = get_settings()
    if not metrics_port and settings.worker_metrics_base_port:
        metrics_port = settings.worker_metrics_base_port + list(WORKERS).index(name)
    serve_worker_metrics(metrics_port, settings.worker_metrics_host)
    freeze_startup_heap()  # the worker's libraries and module state: see core.heap

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(get_settings(), stop)

    asyncio.run(main())


# ``__root__`` lets a package add a top-level command (``reelrank recommend``).
for _register in COMMANDS:
    resolve(_register)({**groups, "__root__": app})


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # raised lazily by commands that read settings
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
