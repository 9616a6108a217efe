"""``reelrank bench serve``: the for-you endpoint under load, with the real models.

1. A synthetic world of ``videos`` videos (default 100k) is generated, loaded into the
   platform, and the retrieval model (+ IVF index), feature store and ranker are trained and
   deployed exactly as ``make demo`` does, under ``var/bench-serve/<videos>x<users>``
   (reused when present).
2. The API runs as ``reelrank serve api`` (its default worker processes: one per core),
   once with the ranker on Ray Serve and once in-process (the baseline, same run), with the
   demo's workers (``core.cli.WORKERS``) running beside it as ``make demo``
   runs them; a load generator (:mod:`benchmarks.loadgen`, another process, loopback,
   bounded in time) sends first pages and cached next pages at increasing rates.
3. Per rate: latency percentiles over *every* request sent (a 503, a timeout or an error
   counts as a failure, at infinite latency) beside the success rate, the degraded share, the
   candidates ranked per first page (from each response's ``X-Reelrank-Ranked``: mean and
   minimum), CPU milliseconds per page (process CPU time of the API workers, the ranker
   replicas, Ray's daemons, the embedded Redis and the demo's workers / pages served), and
   whether the rate was *held* (<= 1 % degraded and <= 0.1 % failed) go to
   ``benchmarks/results/serve.md``, with the per-stage time budget from ``Server-Timing``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from benchmarks.loadgen import PAGES_PER_USER, PATH
from benchmarks.report import table, write_report
from benchmarks.servers import embedded_env
from core.cli import CLI, WORKERS
from platform_services.storage.cache import embedded_server_pid
from platform_services.storage.procs import spawn, stop, stop_all
from serving import demo

ROOT = Path("var/bench-serve")
STAGES = ("viewer", "candidates", "ann", "filter", "features", "ranking", "rerank", "page")
HELD_DEGRADED, HELD_FAILED = 0.01, 0.001
CACHED_FACTOR = 5  # cached next pages are sent at 5x the first-page rates
PORT = 8765
IDLE_S = 10.0  # the idle CPU window per backend, after the warm-up
ROLES = ("api", "ranker", "ray", "redis", "workers")  # CpuMeter's, in table order


def prepare(root: Path, videos: int, users: int, days: int) -> dict:
    """Build the bench world, models and index, step by step; a step already done for the
    same configuration is kept (so an interrupted build resumes). Returns its description."""
    from core.config import get_settings
    from features.store import repo_dir
    from platform_services.storage.db import migrate

    os.environ.update(embedded_env(root))
    get_settings.cache_clear()
    marker = root / "world.json"
    want = {"videos": videos, "users": users, "days": days}
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    if info.get("config") != want:
        info = {"config": want, "timings": {}}

    def world() -> None:
        from training.datasets.store import load_dataset, write_dataset
        from training.datasets.synth import SynthConfig, generate, recent_start
        from training.datasets.world import load_world

        cfg = SynthConfig(n_users=users, n_videos=videos, days=days,
                          start=recent_start(days), impressions_per_user=40.0)
        settings = get_settings()
        write_dataset(demo.DATASET, generate(cfg), "synth", root=settings.data_dir)
        load_world(settings, load_dataset(demo.DATASET, settings.data_dir), replace=True)

    # The id-only two-tower: encoding 100k titles takes ~10 min on 2 cores, and serving cost
    # does not depend on it (item vectors are precomputed, the user tower is the same).
    steps = {"world": world, "retrieval": lambda: demo.train_retrieval(epochs=3, variant="id"),
             "features": demo.build_features,
             # On the snapshots the features step built and serving reads (the ranker's own
             # default repo would be another world's when this root held one before).
             "ranker": lambda: demo.train_ranker(epochs=2, build_features=False,
                                                 feature_repo=repo_dir(get_settings())),
             "deploy": demo.deploy_champions}
    # A world kept from an older version gets the current schema (the workers write to it
    # before the API, which would migrate it, starts).
    migrate(get_settings().database_url)
    for attempt in range(2):
        for name, step in steps.items():
            if f"{name}_s" in info["timings"]:
                continue
            t = time.perf_counter()
            step()
            info["timings"][f"{name}_s"] = time.perf_counter() - t
            marker.write_text(json.dumps(info, indent=2))
        if attempt == 0 and not _ranker_loads():  # trained by an older ranker code
            info["timings"].pop("ranker_s", None)
            info["timings"].pop("deploy_s", None)
    return info


def _refresh_if_due(world: dict) -> None:
    """The features-refresh worker rebuilds at once when the last materialization is older
    than ``features_refresh_s`` (a world built hours ago): do that rebuild here, in the setup,
    not under the first rates' load (it took 4 minutes of CPU on the 100k world)."""
    from core.config import get_settings
    from features.freshness import refresh_due_in
    from features.refresh import refresh_once

    settings = get_settings()
    if refresh_due_in(settings) <= 0:
        t = time.monotonic()
        refresh_once(settings)
        world["timings"]["features_refresh_s"] = round(time.monotonic() - t)


def _ranker_loads() -> bool:
    from core.config import get_settings
    from serving.ranking.backends import load_scorer
    from training import registry

    settings = get_settings()
    registry.connect(settings.mlflow_tracking_uri)
    try:
        load_scorer(f"models:/{settings.ranker_model}@champion", settings.ranker_precision)
        return True
    except Exception as exc:
        print(f"the registered ranker does not load with this code ({exc!r}); retraining")
        return False


class Viewers:
    """Bearer tokens of every user in a fixed random order, handed out so that each run gets
    users no earlier run has used (until they run out): one run's seen sets must not make the
    next run's first pages costlier."""

    def __init__(self, root: Path, users: int) -> None:
        from core.config import get_settings
        from platform_services.auth import issue_token

        settings = get_settings()
        order = random.Random(0).sample(range(users), users)
        self.tokens = [issue_token(settings, u, ttl_s=6 * 3600) for u in order]
        self.path, self.next = root / "tokens.txt", 0

    def take(self, n: int) -> Path:
        """A token file of the next ``n`` users."""
        picked = [self.tokens[(self.next + i) % len(self.tokens)] for i in range(n)]
        self.next += n
        self.path.write_text("\n".join(picked))
        return self.path


def _demo_workers(root: Path) -> list[subprocess.Popen]:
    """The demo's background workers (``core.cli.WORKERS``), as ``make demo`` runs them."""
    env = os.environ | embedded_env(root)
    # spawn: they die with this process, however it ends.
    return [spawn(demo.worker_command(name), log=root / f"worker-{name}.log", env=env)
            for name in WORKERS]


def _server(root: Path, backend: str, port: int, workers: int | None) -> subprocess.Popen:
    cmd = [*CLI, "serve", "api", "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    return _start(cmd, root / f"api-{backend}.log", {"REELRANK_RANKER_BACKEND": backend}, root,
                  port)


def _floor_server(root: Path, port: int, workers: int, page: Path) -> subprocess.Popen:
    """The framework floor (:mod:`benchmarks.floor_app`) serving ``page``."""
    from benchmarks.floor_app import PAGE_ENV

    cmd = [sys.executable, "-m", "uvicorn", "benchmarks.floor_app:create_floor_app",
           "--factory", "--port", str(port), "--workers", str(workers), "--log-level",
           "warning", "--no-access-log"]
    return _start(cmd, root / "api-floor.log", {PAGE_ENV: str(page)}, root, port)


def _start(cmd: list[str], log: Path, env: dict[str, str], root: Path, port: int
           ) -> subprocess.Popen:
    """``cmd`` started on the bench world's settings; returned once ``/healthz`` answers."""
    log.unlink(missing_ok=True)
    proc = spawn(cmd, log=log, env=os.environ | embedded_env(root) | env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start within 300 s")


def _load(port: int, tokens: Path, mode: str, rate: float, seconds: float,
          cursors: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--base", f"http://127.0.0.1:{port}",
           "--tokens", str(tokens), "--mode", mode, "--rate", str(rate), "--seconds",
           str(seconds), *(["--cursors", str(cursors)] if cursors else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 300)
    if out.returncode:
        raise RuntimeError(f"loadgen failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout)


@dataclass(frozen=True)
class CpuPerPage:
    """A row's CPU ms per page by role (:data:`ROLES`), shown as their sum's terms and the
    sum."""

    by_role: tuple[float, ...]

    @property
    def total(self) -> float:
        return sum(self.by_role)

    def __str__(self) -> str:
        return " + ".join(f"{v:.2f}" for v in self.by_role) + f" = {self.total:.2f}"


class CpuMeter:
    """Process CPU time (user + system) of every process a page costs, by role: the API (the
    ``serve api`` process and its uvicorn workers), the Ray Serve ranker replicas, Ray's
    daemons (the rest of the API's children), the embedded Redis (``redis_pid``: a child of
    whichever process connected first, often a demo worker) and the demo's workers
    (``workers``, with their children: the outbox relay and the exposures consumer carry each
    page's events). Not the load generator."""

    def __init__(self, api: subprocess.Popen, redis_pid: int | None = None,
                 workers: Sequence[subprocess.Popen] = ()) -> None:
        self.api = psutil.Process(api.pid)
        self.redis = _process(redis_pid)
        self.workers = [p for w in workers if (p := _process(w.pid)) is not None]

    def _roles(self) -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
        out["api"].append(self.api)
        if self.redis is not None:
            out["redis"].append(self.redis)
        for p in self.api.children(recursive=True):
            try:
                line = " ".join(p.cmdline())
            except psutil.Error:
                continue
            role = "ranker" if "ServeReplica" in line else \
                "api" if "multiprocessing" in line or "uvicorn" in line else "ray"
            if p != self.redis:
                out[role].append(p)
        for w in self.workers:
            out["workers"].append(w)
            out["workers"] += [c for c in _children(w) if c != self.redis]
        return out

    def read(self) -> dict[tuple[str, int], float]:
        """CPU seconds so far per ``(role, pid)``."""
        seconds = {}
        for role, procs in self._roles().items():
            for p in procs:
                try:
                    t = p.cpu_times()
                    seconds[role, p.pid] = t.user + t.system
                except psutil.Error:
                    pass
        return seconds

    @staticmethod
    def spent(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]
              ) -> dict[str, float]:
        """CPU seconds per role between two reads, by the processes alive at the second (a
        process gone meanwhile takes its time along; one started meanwhile counts from 0)."""
        out = dict.fromkeys(ROLES, 0.0)
        for (role, pid), t in after.items():
            out[role] += t - before.get((role, pid), 0.0)
        return out


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _process(pid: int | None) -> psutil.Process | None:
    try:
        return None if pid is None else psutil.Process(pid)
    except psutil.Error:
        return None


def idle_cpu(meter: CpuMeter, seconds: float = IDLE_S) -> dict[str, float]:
    """CPU milliseconds per second of each role with no request arriving: what the serving
    processes burn anyway (Ray's controller and daemons, refresh loops). ``CPU ms/page``
    includes it, spread over the pages: at ``r`` pages/s it adds ``idle / r`` to each."""
    before = meter.read()
    time.sleep(seconds)
    spent = CpuMeter.spent(before, meter.read())
    return {k: 1000 * v / seconds for k, v in spent.items()}


def percentile_all(latencies: list[float], q: float) -> float:
    """The ``q``-th percentile over every request, failures at infinite latency."""
    if not latencies:
        return float("nan")
    return float(np.percentile(np.asarray(latencies, np.float64), q, method="higher"))


def summarize(run: dict, cpu: dict[str, float] | None = None) -> dict:
    recs = [r for r in run["records"] if r["cached"] == (run["mode"] == "cached")]
    ok = [r for r in recs if r["status"] == 200]
    lat = [r["latency_ms"] if r["status"] == 200 else float("inf") for r in recs]
    failed = len(recs) - len(ok)
    degraded = (sum(bool(r.get("degraded")) for r in ok) / len(ok)) if ok else 0.0
    ranked = [r["ranked"] for r in ok if r.get("ranked", -1) >= 0]
    failed_share = failed / len(recs) if recs else 1.0
    return {
        "requests": len(recs), "ok": len(ok), "success": len(ok) / len(recs) if recs else 0.0,
        "shed": sum(r["status"] == 503 for r in recs),
        "errors": sum(r["status"] not in (200, 503) for r in recs),
        "throughput": len(ok) / run["wall_s"],
        "p50": percentile_all(lat, 50), "p95": percentile_all(lat, 95),
        "p99": percentile_all(lat, 99),
        "degraded": degraded,
        "held": bool(recs) and degraded <= HELD_DEGRADED and failed_share <= HELD_FAILED,
        "ranked_mean": float(np.mean(ranked)) if ranked else float("nan"),
        "ranked_min": int(min(ranked)) if ranked else -1,
        "cpu_ms": {k: 1000 * v / len(ok) for k, v in (cpu or {}).items()} if ok else {},
        "reasons": sorted({d for r in ok for d in r.get("degraded", "").split(",") if d}),
    }


def _first_page(port: int, token: str, query: str = "", timeout_s: float = 30.0) -> bytes:
    """One first page's body, as the API sends it."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}{query}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return r.read()


def _drain(port: int, token: str, limit_s: float = 90.0) -> None:
    """Wait until the server answers a first page within a second again: an overloaded run
    leaves queued work behind, which must not be charged to the next run."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        t = time.monotonic()
        try:
            _first_page(port, token, "?page_size=5", timeout_s=5)
            if time.monotonic() - t < 1.0:
                return
        except OSError:
            pass
        time.sleep(2)


def ranker_calls(port: int) -> tuple[float, float]:
    """``(first pages, calls)`` the API processes have sent to Ray Serve so far, from
    ``/metrics`` (``reelrank_ranker_call_requests``: their sum and count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in got:
            if line.startswith(f"reelrank_ranker_call_requests_{kind} "):
                got[kind] += float(line.split()[-1])
    return got["sum"], got["count"]


def _per_call(before: tuple[float, float], after: tuple[float, float]) -> str:
    pages, calls = after[0] - before[0], after[1] - before[1]
    return f"{pages / calls:.2f}" if calls else "-"


def stage_rows(run: dict) -> list[list[object]]:
    recs = [r for r in run["records"] if r["status"] == 200 and not r["cached"]]
    rows = []
    for stage in STAGES:
        xs = [r["timing"][stage] for r in recs if stage in r.get("timing", {})]
        if xs:
            rows.append([stage, float(np.percentile(xs, 50)), float(np.percentile(xs, 99))])
    return rows


def run_bench(out: Path, videos: int, users: int, rates: list[int], seconds: float,
              quick: bool = False, workers: int | None = None) -> Path:
    if quick:
        videos, users, rates, seconds = 5_000, 1_000, [10, 25], 3.0
    # One world per size: the demo-sized run (serve-demo.md) must not replace the 100k world.
    root = ROOT / ("quick" if quick else f"{videos}x{users}")
    root.mkdir(parents=True, exist_ok=True)
    world = prepare(root, videos, users, days=7)
    _refresh_if_due(world)
    viewers = Viewers(root, users)
    probe = viewers.tokens[-1]
    results: list[list[object]] = []
    stages: dict[str, list[list[object]]] = {}
    loads: list[float] = []
    idle: dict[str, dict[str, float]] = {}
    n_workers = workers or os.cpu_count() or 1
    cached_rates = [r * CACHED_FACTOR for r in rates]
    page = root / "floor-page.json"

    def report() -> Path:
        return write_report(out.stem, "Serving benchmark: GET /api/v1/feed/for-you",
                            _body(videos, users, seconds, world, results, stages, loads,
                                  n_workers, idle), out.parent)

    def measure(backend: str, proc: subprocess.Popen, mode: str, rate: int) -> None:
        """One rate's run on the server at PORT: its row (and its stage times)."""
        meter = meter_for(proc)
        _drain(PORT, probe)
        loads.append(os.getloadavg()[0])
        try:
            n = int(rate * seconds) // (PAGES_PER_USER if mode == "cached" else 1)
            tokens, cursors = viewers.take(n + 1), None
            if mode == "cached":  # its first pages are not metered
                cursors = root / "cursors.json"
                cursors.write_text(json.dumps(_load(PORT, tokens, "prime", rate, seconds)))
            def calls() -> tuple[float, float]:  # only Ray Serve's are counted
                return ranker_calls(PORT) if backend == "ray" else (0.0, 0.0)

            before, calls_before = meter.read(), calls()
            run = _load(PORT, tokens, mode, rate, seconds, cursors)
            after, calls_after = meter.read(), calls()
        except Exception as exc:  # keep the other runs; say what failed
            results.append([backend, mode, rate] + ["-"] * 10 + [f"failed: {str(exc)[:80]}"])
            return
        s = summarize(run, CpuMeter.spent(before, after))
        s["pages_per_call"] = _per_call(calls_before, calls_after)
        results.append(_row(backend, mode, rate, s))
        if mode == "first" and rate in (min(rates), 50, max(rates)):
            stages[f"{backend} @ {rate} req/s"] = stage_rows(run)
        report()

    def meter_for(proc: subprocess.Popen) -> CpuMeter:
        return CpuMeter(proc, embedded_server_pid(root / "redis.db"), background)

    background = _demo_workers(root)
    try:
        for backend in ("ray", "local"):
            proc = _server(root, backend, port=PORT, workers=workers)
            try:
                _load(PORT, viewers.take(30), "first", 10, 3.0)  # warm-up, not reported
                _drain(PORT, probe)
                idle[backend] = idle_cpu(meter_for(proc))
                if backend == "local":  # the page the floor serves: the in-process API's
                    page.write_bytes(_first_page(PORT, probe))
                # Cached pages first: an overloaded first-page run must not leave a backlog.
                for mode, mode_rates in (("cached", cached_rates), ("first", rates)):
                    for rate in mode_rates:
                        measure(backend, proc, mode, rate)
            finally:
                # SIGTERM: uvicorn shuts the lifespan down (Ray Serve, Ray) cleanly
                stop(proc, timeout_s=60)
        proc = _floor_server(root, PORT, n_workers, page)
        try:
            _load(PORT, viewers.take(30), "first", 10, 3.0)
            for rate in cached_rates:
                measure("floor", proc, "cached", rate)
        finally:
            stop(proc, timeout_s=60)
    finally:
        stop_all(background, timeout_s=60)
    return report()


def _row(backend: str, mode: str, rate: int, s: dict) -> list[object]:
    cpu = s["cpu_ms"]
    ranked = "-" if mode == "cached" else f"{s['ranked_mean']:.0f} / {s['ranked_min']}"
    return [backend, mode, rate, s["throughput"], f"{100 * s['success']:.1f} %", s["p50"],
            s["p95"], s["p99"], f"{100 * s['degraded']:.1f} %", "yes" if s["held"] else "no",
            ranked, s["pages_per_call"], CpuPerPage(tuple(cpu.get(role, 0.0) for role in ROLES)),
            ",".join(s["reasons"]) or "-"]


def _completed(results: list[list[object]]) -> dict[tuple, list[object]]:
    """The rows of runs that completed (a failed one has no latencies), by (backend, pages,
    rate)."""
    return {(r[0], r[1], r[2]): r for r in results if isinstance(r[5], float)}


def _ratios(results: list[list[object]]) -> list[list[object]]:
    """Ray Serve minus the in-process ranker: p50 and p99 (ms) at the same rates."""
    by = _completed(results)
    return [[mode, rate, ray[5] - local[5], ray[7] - local[7]]
            for (backend, mode, rate), ray in by.items()
            if backend == "ray" and (local := by.get(("local", mode, rate)))]


def _floor_rows(results: list[list[object]]) -> list[list[object]]:
    """Per cached rate: each feed backend's served/s, p99 and CPU per page beside the
    framework floor's, and the CPU as a ratio to the floor's."""
    by = _completed(results)
    rows = []
    for (backend, mode, rate), row in by.items():
        floor = by.get(("floor", "cached", rate))
        if backend == "floor" or mode != "cached" or floor is None:
            continue
        ours, base = row[12].total, floor[12].total
        rows.append([backend, rate, row[3], row[7], ours, floor[3], floor[7], base,
                     f"{ours / base:.2f}x" if base > 0 else "-"])
    return rows


def _precision() -> str:
    from core.config import get_settings
    from models.ranker import inference_dtype

    setting = get_settings().ranker_precision
    dtype = str(inference_dtype(setting)).removeprefix("torch.")
    return f"network in {dtype}, `ranker_precision={setting}`"


def _body(videos: int, users: int, seconds: float, world: dict, results: list, stages: dict,
          loads: list[float], workers: int, idle: dict[str, dict[str, float]]) -> str:
    body = [
        f"Catalog: {videos:,} videos, {users:,} users (synthetic world, 7 days of logs); page "
        "size 20; the real two-tower (id variant) + IVF index, Feast online features on the "
        "embedded Redis (batch item features held in each API process), the multi-task "
        f"ranker ({_precision()}). API: {workers} worker processes; the demo's workers "
        f"({', '.join(WORKERS)}) running. Setup: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in world["timings"].items()) + ".",
        "",
        "Open-loop load from a separate process over loopback; latency from each request's "
        f"scheduled send time; {seconds:g} s per rate. Percentiles are over *every* request "
        "sent: a 503 (shed at capacity), a timeout or an error is a failure and counts at "
        "infinite latency (`inf`), so a p99 is finite only with under 1 % failed. `degraded`: "
        "share of 200s served with a fallback (header `X-Reelrank-Degraded`, `why` its "
        "components). `held`: <= 1 % degraded and <= 0.1 % failed. `ranked`: candidates "
        "ranked per first page (`X-Reelrank-Ranked`), mean / minimum. `pages/call`: first "
        "pages per call to Ray Serve (the API processes batch the pages they compute back to "
        "back; `reelrank_ranker_call_requests`). `CPU ms/page`: process "
        "CPU time per page served, API workers + ranker replicas + Ray's daemons + the "
        "embedded Redis + the demo's workers = the total; a cached run's users get their "
        "first pages (the cursors it follows) beforehand, outside the run and its CPU. "
        "1-minute load average at the start of the runs: "
        + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a")
        + f" on {os.cpu_count()} cores.",
        "",
        table(["backend", "pages", "req/s", "served/s", "success", "p50 ms", "p95 ms", "p99 ms",
               "degraded", "held", "ranked", "pages/call", "CPU ms/page", "why"], results),
        "",
        f"Idle CPU, ms per second with no request arriving ({IDLE_S:g} s after the warm-up, "
        "by role as in `CPU ms/page`, which includes it: at r pages/s it adds idle / r ms to "
        "each page):",
        "",
        table(["backend", *ROLES],
              [[b, *(f"{v.get(k, 0.0):.1f}" for k in ROLES)]
               for b, v in idle.items()]),
        "",
        "## Ray Serve against the in-process ranker (the baseline), same run and rates",
        "",
        table(["pages", "req/s", "p50 ray - local (ms)", "p99 ray - local (ms)"],
              _ratios(results)),
        "",
        "## Cached pages against the framework floor, same run and rates",
        "",
        "The floor (`benchmarks/floor_app.py`, the `floor` rows above): uvicorn and FastAPI "
        "with the same worker count, the API's token check and a fixed body (a first page "
        "this run's API served), nothing else: what any signed-in page costs on this stack "
        "and machine, the demo's workers running beside it as for the API. Whatever a cached "
        "page costs above it is the feed's own work (middleware, rate limit, the list in "
        "Redis, seen marks, the exposure log, rendering).",
        "",
        table(["backend", "req/s", "served/s", "p99 ms", "CPU ms/page", "floor served/s",
               "floor p99 ms", "floor CPU ms/page", "CPU / floor"], _floor_rows(results)),
        "",
        "## Time per stage, first pages (ms)",
    ]
    for name, rows in stages.items():
        body += ["", f"### {name}", "", table(["stage", "p50", "p99"], rows)]
    return "\n".join(body)
