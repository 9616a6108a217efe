"""``reelrank experiment simulate`` and ``reelrank experiment fit-users``: an offline A/B test
with simulated users against the real API.

``simulate --preset two-tower-vs-popularity`` on a platform with a loaded world and deployed
champions (``make demo``, or ``reelrank bench experiments``): creates and starts the preset's
experiment, starts the API (``reelrank serve api`` on ``--port``) and the workers unless
``--api-url`` names a running one, lets ``--users`` simulated users visit, waits until the
exposure worker has logged everything, stops the experiment and analyses it (the HTML report
too). ``--experiment NAME`` simulates against an experiment that is already running instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from core.cli import CLI
from core.config import Settings, get_settings
from platform_services.storage.procs import stop_all

KUAIRAND = Path("../shared/data/kuairand")
PRESET_NAMES = ("two-tower-vs-popularity",)
WORKERS = ("relay", "exposures", "counters", "features", "trending")
SIMULATED_IP_LIMIT = "1000000/minute"
log = logging.getLogger(__name__)


def preset(name: str) -> dict[str, Any]:
    """The experiment definition of a preset (what ``reelrank experiment create`` takes).

    ``two-tower-vs-popularity``: control serves popularity only - every candidate from the
    trending source, no exploration, and every ranker task weighted 0, so the list keeps the
    trending order (the ranker's scores are computed and ignored: the arms pay the same
    latency); treatment is production, the two-tower and the ranker champions."""
    from experiments.catalog import score_tasks

    if name != "two-tower-vs-popularity":
        raise typer.BadParameter(f"unknown preset {name!r} (known: {', '.join(PRESET_NAMES)})",
                                 param_hint="--preset")
    return {
        "name": name,
        "hypothesis": "The two-tower retriever + multi-task ranker raise watch time per user "
                      "over a popularity-only feed.",
        "layer": "simulation",
        "variants": [
            {"name": "control", "weight": 50,
             "quotas": {"trending": 1.0, "ann": 0.0, "following": 0.0, "fresh": 0.0,
                        "explore": 0.0},
             "explore_slots": 0.0, "score_weights": dict.fromkeys(sorted(score_tasks()), 0.0)},
            {"name": "treatment", "weight": 50, "ranker_alias": "champion",
             "retrieval_alias": "champion"},
        ],
        "primary_metric": "watch_time_per_user",
    }


def response_model(settings: Settings, kuairand: Path, refit: bool = False):  # noqa: ANN201
    """The fitted response model under ``<var>/simulator``, fitted first if absent."""
    from experiments.simulator_fit import ResponseModel, fit_kuairand

    path = _model_dir(settings)
    if refit or not (path / "model.json").is_file():
        if not kuairand.exists():
            raise FileNotFoundError(f"{kuairand}: no KuaiRand data to fit the users on")
        log.info("fitting the simulated users to KuaiRand (once; kept in %s)", path)
        return fit_kuairand(kuairand, path)
    return ResponseModel.load(path)


def can_simulate(settings: Settings, kuairand: Path) -> bool:
    """Whether :func:`response_model` has a model: fitted already, or KuaiRand to fit on."""
    return (_model_dir(settings) / "model.json").is_file() or kuairand.exists()


def _model_dir(settings: Settings) -> Path:
    return settings.path("simulator", "response_model")


def _wait_http(url: str, proc: subprocess.Popen, log: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"API did not answer within {limit_s:.0f} s")


@contextmanager
def platform(settings: Settings, port: int) -> Iterator[str]:
    """The API on ``port`` and the workers, as child processes with this process's
    environment; SIGTERM (a clean shutdown) on exit."""
    # Every simulated user comes from this machine's one address, where real clients each have
    # their own: the per-IP limit would throttle them all together (per-user limits stay).
    env = {"REELRANK_RATE_LIMIT_IP": SIMULATED_IP_LIMIT} | os.environ
    logs = settings.path("simulator", "logs", "x").parent
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for name in WORKERS:
            with (logs / f"worker-{name}.log").open("wb") as out:
                procs.append(subprocess.Popen([*CLI, "worker", name], stdout=out,
                                              stderr=subprocess.STDOUT, env=env))
        api_log = logs / "api.log"
        with api_log.open("wb") as out:
            api = subprocess.Popen([*CLI, "serve", "api", "--port", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url, api, api_log)
        yield url
    finally:
        stop_all(procs[::-1], timeout_s=60)


def wait_for_logs(sessions, experiment: str, limit_s: float = 180.0,  # noqa: ANN001
                  quiet_s: float = 6.0) -> tuple[int, int]:
    """Until the exposure worker's tables stop growing for ``quiet_s`` (the relay and the
    worker poll the bus): (exposures, interactions) logged."""
    from sqlalchemy import func, select

    from experiments.models import Experiment, Exposure, Interaction

    last, since, deadline = (-1, -1), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with sessions() as s:
            exp_id = s.scalar(select(Experiment.id).where(Experiment.name == experiment))
            now = (s.scalar(select(func.count()).select_from(Exposure)
                            .where(Exposure.experiment_id == exp_id)) or 0,
                   s.scalar(select(func.count()).select_from(Interaction)) or 0)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and now[0] > 0:
            break
        time.sleep(1.0)
    return last


def start_experiment(settings: Settings, sessions, spec: dict[str, Any]) -> None:  # noqa: ANN001
    """Create (if new) and start the preset's experiment; a running one is reused."""
    from experiments import store
    from experiments.models import Status
    from experiments.spec import parse_spec

    parsed = parse_spec(spec)
    with sessions.begin() as s:
        try:
            exp = store.get(s, parsed.name)
        except store.NotFound:
            exp = store.create(s, parsed, store.registry_aliases(settings))
        if exp.status == Status.DRAFT.value:
            store.start(s, parsed.name)
        elif exp.status != Status.RUNNING.value:
            raise typer.BadParameter(f"experiment {parsed.name!r} is {exp.status}; give "
                                     "another --name", param_hint="--name")


@dataclass
class Outcome:
    experiment: str
    simulation: Any  # experiments.simulator.SimResult
    analysis: Any  # experiments.analysis.Analysis
    report: Path
    logged: tuple[int, int]
    fit: dict


def run_simulation(settings: Settings, *, users: int, preset_name: str | None = None,
                   experiment: str | None = None, name: str | None = None,
                   api_url: str | None = None, port: int = 8023, seed: int = 0,
                   concurrency: int = 8, max_pages: int = 20, kuairand: Path = KUAIRAND,
                   dataset: str = "synth", out: Path | None = None) -> Outcome:
    """The whole offline A/B test (module doc); the analysis and its report."""
    from experiments import report, store
    from experiments.analysis import analyze
    from experiments.simulator import Population, SimConfig, pick_users, simulate
    from platform_services.auth import issue_token
    from platform_services.storage.db import make_engine, migrate, session_factory
    from training import registry
    from training.datasets.store import load_dataset

    model = response_model(settings, kuairand)
    pop = Population(load_dataset(dataset, settings.data_dir))
    migrate(settings.database_url)
    registry.connect(settings.mlflow_tracking_uri)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        if preset_name:
            spec = preset(preset_name) | ({"name": name} if name else {})
            start_experiment(settings, sessions, spec)
            experiment = spec["name"]
        assert experiment is not None
        ids = pick_users(pop, users, seed)
        tokens = {int(u): issue_token(settings, int(u), ttl_s=12 * 3600) for u in ids}
        cfg = SimConfig(users=len(ids), seed=seed, concurrency=concurrency,
                        max_pages=max_pages)

        def go(url: str) -> Any:
            log.info("experiment %s running; %d simulated users visit %s after %.0f s (once "
                     "every API process has seen it start)", experiment, len(ids), url,
                     settings.experiments_refresh_s)
            time.sleep(settings.experiments_refresh_s)
            result = asyncio.run(simulate(url, tokens, pop, model, cfg))
            log.info("simulated in %.0f s; waiting for the exposure log to settle",
                     result.seconds)
            return result

        if api_url:
            result = go(api_url)
            logged = wait_for_logs(sessions, experiment)
        else:
            with platform(settings, port) as url:
                result = go(url)
                logged = wait_for_logs(sessions, experiment)
        with sessions.begin() as s:
            if store.get(s, experiment).status == "running":
                store.stop(s, experiment)
        log.info("logged %d exposures, %d interactions; analysing", *logged)
        with sessions() as s:
            analysis = analyze(s, experiment)
        path = report.write(analysis, out or settings.path("reports", "x").parent)
        return Outcome(experiment, result, analysis, path, logged, model.report)
    finally:
        engine.dispose()


def simulate_command(
    preset_name: Annotated[str | None, typer.Option(
        "--preset", help=f"A ready experiment: {' | '.join(PRESET_NAMES)}.")] = None,
    experiment: Annotated[str | None, typer.Option(
        help="A running experiment to simulate instead of a preset.")] = None,
    name: Annotated[str | None, typer.Option(
        help="The preset experiment's name (default: the preset's).")] = None,
    users: Annotated[int, typer.Option(min=1, max=1_000_000, help="Simulated users.")] = 2000,
    api_url: Annotated[str | None, typer.Option(
        help="A running API (default: start one and the workers on --port).")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8023,
    seed: Annotated[int, typer.Option()] = 0,
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 8,
    max_pages: Annotated[int, typer.Option(min=1, max=100)] = 20,
    kuairand: Annotated[Path, typer.Option(help="KuaiRand, to fit the users on.")] = KUAIRAND,
) -> None:
    """Simulated users (fitted to KuaiRand) visit the real for-you feed; then the analysis."""
    from experiments import report
    from experiments.spec import SpecError

    if (preset_name is None) == (experiment is None):
        typer.echo("error: give --preset or --experiment (one of them)", err=True)
        raise typer.Exit(2)
    try:
        got = run_simulation(get_settings(), users=users, preset_name=preset_name,
                             experiment=experiment, name=name, api_url=api_url, port=port,
                             seed=seed, concurrency=concurrency, max_pages=max_pages,
                             kuairand=kuairand)
    except (SpecError, FileNotFoundError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("simulation: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in got.simulation.summary().items()))
    typer.echo(report.text_table(got.analysis))
    typer.echo(f"\nreport: {got.report}")


def fit_users_command(
    kuairand: Annotated[Path, typer.Option(help="KuaiRand directory.")] = KUAIRAND,
) -> None:
    """Fit the simulated users' response model to KuaiRand; print its held-out fit."""
    model = response_model(get_settings(), kuairand, refit=True)
    for response, m in model.report["test"].items():
        typer.echo(f"{response:12s} " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()))
    typer.echo(f"sampling rate {model.sampling_rate:.4f}; saved under "
               f"{get_settings().path('simulator', 'response_model')}")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["experiment"].command("simulate")(simulate_command)
    groups["experiment"].command("fit-users")(fit_users_command)
