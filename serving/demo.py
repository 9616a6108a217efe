"""``reelrank demo`` steps after the world is loaded: train, index, deploy, serve.

Each step is the CLI command a person would run, called in-process on the embedded defaults.
The last one (:func:`serve`) runs the product: the workers, the MLflow UI on the tracking
store and the API (the ranker on Ray Serve) as this process's children; once the API answers
it prints the URLs (web player, API docs, MLflow) and a request to paste, uploads the real
clips of ``demo_clips_dir`` through the media pipeline (:mod:`serving.demo_clips`) and starts
the simulated users (:mod:`experiments.traffic`). Ctrl-C stops the API (which stops Ray Serve
and Ray), then every child with :func:`platform_services.storage.procs.stop_all`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import typer

from core.cli import CLI
from core.config import Settings, get_settings
from platform_services.storage.procs import spawn, stop_all

DATASET = "synth"  # the generated world's data set name (tests and benchmarks write it)
# Workers whose work can wait (transcoding the uploaded clips, embedding them, rebuilding the
# batch features) and the simulated users run at a lower priority on the demo's one machine:
# a burst of theirs (a clip's transcode, the simulator's start) must not take the cores from
# the for-you pages (in production they run on other machines, the users on their phones).
BATCH_WORKERS = frozenset({"transcode", "embed", "features-refresh"})


def _niced(cmd: list[object]) -> list[object]:
    return ["nice", "-n", "10", *cmd] if shutil.which("nice") else cmd


def worker_command(name: str) -> list[object]:
    """How the demo starts the worker ``name`` (``bench serve`` starts them the same way)."""
    cmd = [*CLI, "worker", name]
    return _niced(cmd) if name in BATCH_WORKERS else cmd


def dataset() -> str:
    """The demo's data set: ``synth`` (the generated world) or ``kuairand`` (real logs)."""
    return get_settings().demo_data


def kuairand_dir(settings: Settings) -> Path:
    """The KuaiRand logs the simulated users are fitted on: the demo's own world when it runs
    on KuaiRand (``--data kuairand PATH``), else ``demo_kuairand_dir``."""
    if settings.demo_data == "kuairand" and settings.demo_data_path is not None:
        return settings.demo_data_path
    return settings.demo_kuairand_dir


def _data() -> Path:
    return Path(get_settings().data_dir) / dataset()


def train_retrieval(epochs: int = 10, variant: str = "content") -> None:
    """Train the two-tower on the demo world, register it, build its FAISS index."""
    from candidate_gen.retrieval_cli import index_build
    from training.registry import without_inapplicable_advice
    from training.retrieval.cli import train_retrieval as train

    # Wrapped here, not in training/retrieval (its code is part of every committed two-tower
    # fit's fingerprint): MLflow's advice on the bundle does not apply to it.
    with without_inapplicable_advice():
        train(dataset=dataset(), data=_data(), epochs=epochs, variant=variant, progress=True)
    index_build(model="models:/reelrank-retrieval/latest")


def build_features() -> None:
    """Batch feature snapshots of the world, registered and materialized online."""
    from features.cli import build, materialize

    build(dataset=dataset())
    materialize()


def train_ranker(**options: object) -> None:
    """Train the multi-task ranker on the point-in-time training set and register it;
    ``options`` go to ``reelrank train ranker`` (e.g. ``epochs``). The baselines (LightGBM,
    single-task) are left to ``reelrank train ranker`` and the bench: the demo serves."""
    from training.ranker.cli import train_ranker as train

    # The watch history is an input (``reelrank train ranker``'s default length): whether the
    # network reads it is chosen on validation, and the feed passes each user's list
    # (u_last_watched) either way.
    defaults = {"progress": True, "lightgbm": False, "single_task": ""}
    train(dataset=dataset(), data=_data(), **(defaults | options))  # type: ignore[arg-type]


def deploy_champions() -> None:
    """Point both champions at the newest versions (a re-run of the demo moves them)."""
    from training import registry

    registry.connect(get_settings().mlflow_tracking_uri)
    for model in ("retrieval", "ranker"):
        name, version, _ = registry.move_alias(model, "champion")
        typer.echo(f"{name}@champion -> version {version}")


def simulated_users_logs(settings: Settings) -> Path | None:
    """The KuaiRand logs the simulated users are fitted on when the demo sends them (visits
    asked for, and a fitted model or logs to fit one on); None when it sends none."""
    from experiments.simulate_cli import can_simulate

    kuairand = kuairand_dir(settings)
    if settings.demo_visits_per_min > 0 and can_simulate(settings, kuairand):
        return kuairand
    return None


def fit_simulated_users() -> None:
    """Fit the simulated users' response model now (once; ~10 s on both cores), not in the
    traffic process after the API is up, where the fit took the cores from the first pages
    a new user asks for (they came back degraded: the ranker missed its budget)."""
    from experiments.simulate_cli import response_model

    settings = get_settings()
    if (kuairand := simulated_users_logs(settings)) is not None:
        response_model(settings, kuairand)


def _demo_user() -> int:
    """A user with follows and history, so every source has something to show."""
    from sqlalchemy import func, select

    from platform_services.storage.db import make_engine
    from platform_services.storage.models import Follow

    engine = make_engine(get_settings().database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(
                select(Follow.follower_id).group_by(Follow.follower_id)
                .order_by(func.count().desc()).limit(1)).scalar() or 0)
    finally:
        engine.dispose()


def urls(base: str, mlflow: str, token: str) -> list[str]:
    """What the demo prints once the API answers: where to look, and a request to paste."""
    return [
        f"  web player   {base}/web/",
        f"  API docs     {base}/docs",
        f"  MLflow UI    {mlflow}",
        "",
        "  the for-you feed of a demo user (a token valid for 24 h):",
        f"  curl -s -H 'Authorization: Bearer {token}' \\",
        f"    '{base}/api/v1/feed/for-you?page_size=5' | python3 -m json.tool",
        "",
        "  then pass the response's next_cursor as &cursor=... for the next page;",
        "  also /api/v1/feed/trending?time_range=7d and /api/v1/feed/following.",
    ]


def wait_api_ready(base: str, processes: int, limit_s: float = 300.0) -> int:
    """How many API processes have started (``reelrank_api_processes_ready`` on
    ``/metrics``), once all ``processes`` have or ``limit_s`` has passed (0: none answered).
    ``/healthz`` answers once the first one is up: a page asked for while the others still
    load and warm the ranker waited behind them and came back degraded."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline, ready = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/metrics/", timeout=5) as r:
                text = r.read().decode()
            ready = int(sum(s.value for fam in text_string_to_metric_families(text)
                            if fam.name == "reelrank_api_processes_ready"
                            for s in fam.samples))
            if ready >= processes:
                break
        except (OSError, ValueError):  # not up yet, rate limited, or a torn read
            pass
        time.sleep(0.5)
    return ready


def _mlflow(settings: Settings, logs: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on the tracking store, in its own session (its workers stop with
    it: :func:`stop_all` signals the group)."""
    host = urlsplit(settings.api_base_url).hostname or "127.0.0.1"
    port = settings.demo_mlflow_port
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           settings.mlflow_tracking_uri, "--host", host, "--port", port, "--workers", 1]
    return spawn(cmd, log=logs / "mlflow.log", start_new_session=True), f"http://{host}:{port}"


class Children:
    """The demo's child processes; once stopping, none is added (a late start is refused).

    A child started from another thread gets its parent-death signal when *that thread* ends
    (Linux ``PR_SET_PDEATHSIG`` follows the thread): such a thread calls :meth:`wait_stopped`
    before it returns."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.stopping = False
        self.stopped = threading.Event()

    def wait_stopped(self) -> None:
        self.stopped.wait()

    def start(self, cmd: list[object], log: Path, **popen: object) -> subprocess.Popen | None:
        with self.lock:
            if self.stopping:
                return None
            self.procs.append(spawn(cmd, log=log, **popen))
            return self.procs[-1]

    def stop(self, timeout_s: float) -> list[int]:
        """Every child, the last started first; the pids that had to be killed."""
        with self.lock:
            self.stopping = True
        try:
            return stop_all(self.procs[::-1], timeout_s=timeout_s)
        finally:
            self.stopped.set()


def _after_start(settings: Settings, base: str, mlflow: str, token: str, user_id: int,
                 children: Children, logs: Path) -> None:
    """Once the API answers: the URLs, the simulated users, the real clips (a thread)."""
    from serving.demo_clips import upload_clips
    from serving.launch import workers_for

    processes = workers_for(settings)
    ready = wait_api_ready(base, processes)
    if not ready:
        typer.secho("the API did not answer within 300 s; see its output above", fg="red")
        return
    if ready < processes:
        typer.secho(f"{ready} of {processes} API processes started within 300 s; the first "
                    "pages may be slow", fg="yellow")
    typer.secho("\nreelrank is serving:\n", bold=True)
    typer.echo("\n".join(urls(base, mlflow, token)))
    kuairand = simulated_users_logs(settings)
    if kuairand is not None:
        children.start(
            _niced([sys.executable, "-m", "experiments.traffic", "--api", base,
                    "--visits-per-min", settings.demo_visits_per_min, "--dataset", dataset(),
                    "--kuairand", kuairand]),
            log=logs / "traffic.log")
        typer.echo(f"\n  simulated users: {settings.demo_visits_per_min:g} visits/min "
                   f"(log {logs / 'traffic.log'})")
    elif settings.demo_visits_per_min > 0:
        typer.echo(f"\n  (no KuaiRand logs in {kuairand_dir(settings)} to fit the simulated "
                   "users on: no simulated traffic; set REELRANK_DEMO_KUAIRAND_DIR)")
    typer.echo(f"  logs of the workers and MLflow: {logs}")
    typer.echo("  Ctrl-C stops the API, Ray Serve, Ray, the workers, MLflow and the traffic.\n")
    try:
        upload_clips(settings, base, user_id)
    except Exception as exc:  # noqa: BLE001 - a failed upload must not hide the serving API
        typer.secho(f"  the real clips were not uploaded: {exc!r}", fg="red")
    children.wait_stopped()  # the traffic process dies with the thread that started it


def serve() -> None:
    """Workers, MLflow UI and the API (at ``api_base_url``, ``api_workers`` processes) with
    the ranker on Ray Serve; then the clips and the traffic; until Ctrl-C."""
    from core.cli import WORKERS  # imported here: importing it registers every command
    from platform_services.auth import issue_token
    from serving.cli import serving_threads
    from serving.launch import run_api

    settings = get_settings()
    url = urlsplit(settings.api_base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 8000
    base = f"http://{host}:{port}"
    logs = settings.path("demo", "logs", "x").parent
    user_id = _demo_user()
    token = issue_token(settings, user_id, ttl_s=24 * 3600)
    children = Children()
    for w in WORKERS:
        children.start(worker_command(w), log=logs / f"worker-{w}.log")
    mlflow, mlflow_url = _mlflow(settings, logs)
    serving_threads()
    threading.Thread(target=_after_start, daemon=True,
                     args=(settings, base, mlflow_url, token, user_id, children, logs)).start()
    try:
        run_api(settings, host, port)  # returns after Ctrl-C and a clean lifespan shutdown
    finally:
        typer.echo("stopping the traffic, the workers and MLflow ...")
        named = {p.pid: " ".join(map(str, p.args[-2:])) for p in [*children.procs, mlflow]}
        killed = children.stop(timeout_s=30)
        killed += stop_all([mlflow], timeout_s=15, group=True)
        typer.echo("stopped: API, Ray Serve, Ray, the workers, MLflow and the traffic"
                   + (f" (killed, too slow to stop: {', '.join(named[k] for k in killed)})"
                      if killed else ""))
