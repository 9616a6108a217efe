"""``reelrank bench product``: the product end to end -> ``benchmarks/results/product.md``.

1. **Time to the first for-you page.** The repository's ``HEAD`` is cloned into a fresh
   directory beside this one (so ``../shared/data`` resolves as it does here) and ``reelrank
   demo`` is started there on the embedded defaults, with this virtualenv (installing one is
   ``make``'s part and not timed). The clock runs from the start of the process until
   ``GET /api/v1/feed/for-you`` with the token the demo prints answers 200 with videos. Then
   the demo gets Ctrl-C (``SIGINT``) and must exit leaving no process of its group behind.
2. **Soak** (:func:`benchmarks.reliability.soak`): the steady mix for ``soak_s`` seconds;
   requests, errors, latency, the RSS of the API and the workers over time and its slope.
3. **Faults** (:func:`benchmarks.faults.faults`, :func:`~benchmarks.faults.disk_full`):
   what the API answered during each fault and what was lost once it recovered.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from benchmarks.faults import disk_full, faults
from benchmarks.reliability import FLAT_MIB_PER_MIN, NOISE_MIB, soak
from benchmarks.report import table, write_report
from core.cli import CLI, DEMO_STEPS

ROOT = Path("var/bench-product")
TOKEN = re.compile(r"Bearer ([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")


def _first_page(base: str, token: str) -> tuple[int, bool]:
    """A first for-you page: (status, 0 when none came back; whether the ranker was missing)."""
    req = urllib.request.Request(f"{base}/api/v1/feed/for-you?page_size=5",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            unranked = "ranker" in resp.headers.get("X-Reelrank-Degraded", "").split(",")
            return (resp.status if b'"video_id"' in resp.read() else 0), unranked
    except urllib.error.HTTPError as exc:
        return exc.code, True
    except (urllib.error.URLError, OSError):
        return 0, True


def _replicas(demo: int) -> set[psutil.Process]:
    """The ranker's Ray Serve replica processes under the demo's process ``demo``."""
    found = set()
    for p in psutil.Process(demo).children(recursive=True):
        try:
            if "ServeReplica" in " ".join(p.cmdline()):
                found.add(p)
        except psutil.Error:
            continue
    return found


def kill_replicas(base: str, token: str, demo: int, limit_s: float = 120.0) -> dict:
    """Issue 17's "kill Ray Serve's replica" on the running demo: every ranker replica killed
    with SIGKILL, then a first page every half second until one is ranked again, by a new
    replica (Serve replaces them); the answers meanwhile by status, and how many were served
    without the ranker."""
    victims = _replicas(demo)
    for p in victims:
        p.kill()
    t0, answers, unranked = time.monotonic(), {}, 0
    out: dict = {"killed": len(victims)}
    while time.monotonic() - t0 < limit_s:
        status, missing = _first_page(base, token)
        answers[status] = answers.get(status, 0) + 1
        unranked += status == 200 and missing
        if status == 200 and not missing and _replicas(demo).isdisjoint(victims):
            out["recovered_s"] = time.monotonic() - t0
            break
        time.sleep(0.5)
    return out | {"answers": answers, "unranked": unranked}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def demo_to_first_page(port: int, limit_s: float = 1800.0) -> dict:
    """Clone ``HEAD``, run ``reelrank demo`` in the clone, time the first for-you page."""
    src = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, check=True).stdout.strip())
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True, cwd=src).stdout.strip()
    clone = Path(tempfile.mkdtemp(prefix=".product-clone-", dir=src.parent))
    out: dict = {"commit": rev[:12]}
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(src), str(clone)],
                       check=True)
        subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELRANK_")}
        env |= {"PYTHONPATH": str(clone), "REELRANK_API_BASE_URL": f"http://127.0.0.1:{port}"}
        log_path = clone / "demo.log"
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*CLI, "demo"], cwd=clone, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            token = None
            while time.monotonic() - t0 < limit_s and proc.poll() is None:
                if token is None and (m := TOKEN.search(log_path.read_text(errors="replace"))):
                    token = m.group(1)
                if token and _first_page(f"http://127.0.0.1:{port}", token)[0] == 200:
                    out["first_page_s"] = time.monotonic() - t0
                    out["replicas"] = kill_replicas(f"http://127.0.0.1:{port}", token, proc.pid)
                    break
                time.sleep(1.0)
            else:
                out["error"] = (f"demo exited ({proc.returncode})" if proc.poll() is not None
                                else f"no first page within {limit_s:.0f} s")
                out["log_tail"] = log_path.read_text(errors="replace")[-2000:]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
            time.sleep(2.0)
            out["left_behind"] = _group_alive(proc.pid)
            if out["left_behind"]:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    return out


def _rss_rows(samples: list[dict[str, float]], every_s: float) -> list[list[object]]:
    rows, next_t = [], 0.0
    for s in samples:
        if s["t"] >= next_t:
            rows.append([f"{s['t'] / 60:.1f}", s["api"], s["relay"], s["counters"]])
            next_t += every_s
    last = samples[-1]
    if rows and rows[-1][0] != f"{last['t'] / 60:.1f}":
        rows.append([f"{last['t'] / 60:.1f}", last["api"], last["relay"], last["counters"]])
    return rows


def _replica_row(r: dict | None) -> list[object]:
    fault = "Ray Serve's ranker replicas killed (kill -9) under the running demo"
    if not r:
        return [fault, "not run (no demo)", "-"]
    answers = ", ".join(f"{'no answer' if k == 0 else k}: {n}"
                        for k, n in sorted(r["answers"].items()))
    back = (f"ranked by new replicas {r['recovered_s']:.0f} s after the kill"
            if "recovered_s" in r else "NOT ranked again within the limit")
    return [fault, f"{r['killed']} killed; API answered {answers} (first pages, 2 a second), "
            f"{r['unranked']} of them ranked by the fallback; {back}", "- (reads only)"]


def _fault_rows(result: dict, disk: dict, replicas: dict | None) -> list[list[object]]:
    books = result["books"]
    rows = [_replica_row(replicas)]
    for p in result["phases"]:
        answers = ", ".join(f"{'no answer' if k == 0 else k}: {n}"
                            for k, n in sorted(p["answers"].items()))
        backlog = (f"; backlog at the end of the fault: {p['unpublished']} unpublished, "
                   f"{p['unapplied']} unapplied" if "unpublished" in p else "")
        if p.get("limiter_failed_open"):
            backlog += (f"; rate-limit checks skipped (failed open): "
                        f"{p['limiter_failed_open']:.0f}")
        rows.append([p["fault"], f"API answered {answers}{backlog}", "see reconciliation"])
    lost = books["lost_writes"] + books["lost_events"] + books["counter_mismatches"]
    rows.append(["(reconciliation after recovery)",
                 f"{books['acknowledged']} acknowledged writes, {books['committed_events']} "
                 f"events committed, {books['applied']} applied once each, "
                 f"{books['unpublished']} unpublished, caught up in {books['catch_up_s']:.1f} s",
                 lost])
    if "skipped" in disk:
        rows.append(["blob store disk full", f"not run: {disk['skipped']}", "-"])
    else:
        status, body = disk["too_big"]
        rows.append(["blob store disk full (1 MiB tmpfs, 3 MiB upload)",
                     f"{status} {body}; files left: {disk['files_left'] or 'none'}; "
                     f"next small upload {disk['small']}", len(disk["files_left"])])
    return rows


def run_bench(out: Path, soak_s: float = 600.0, port: int = 8130, demo: bool = True,
              fault_phase_s: float = 10.0) -> Path:
    ROOT.mkdir(parents=True, exist_ok=True)
    for scenario in ("soak", "faults", "disk"):  # each seeds a new world (a rerun's too)
        shutil.rmtree(ROOT / scenario, ignore_errors=True)
    load_before = os.getloadavg()
    first = demo_to_first_page(port) if demo else {"skipped": "--no-demo"}
    print("demo:", first, flush=True)
    s = soak(ROOT / "soak", seconds=soak_s, port=port + 1)
    print("soak:", s["summary"], s["slopes"], flush=True)
    f = faults(ROOT / "faults", phase_s=fault_phase_s, port=port + 2)
    d = disk_full(ROOT / "disk")
    print("faults:", f["books"], d, flush=True)
    return write_report(out.stem, "The product end to end: first page, soak, faults",
                        _body(first, s, f, d, load_before), out.parent)


def _body(first: dict, s: dict, f: dict, d: dict, load: tuple[float, ...]) -> str:
    summary = s["summary"]
    if "first_page_s" in first:
        demo = (f"**{first['first_page_s']:.0f} s** from starting `reelrank demo` on a fresh "
                f"clone (commit {first['commit']}) to the first for-you page with videos; "
                "after Ctrl-C " + ("processes were LEFT BEHIND" if first["left_behind"]
                                    else "no process of the demo was left") + ".")
    else:
        demo = f"Not measured ({first.get('skipped') or first.get('error')})."
    slopes = ", ".join(f"{k} {v:+.2f}" for k, v in s["slopes"].items())
    return "\n".join([
        f"1-minute load average when the run started: {load[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "## Time to the first for-you page",
        "",
        demo + " The clone runs with the existing virtualenv (creating one is `make`'s part); "
        "the demo runs its steps (" + ", ".join(name for name, _ in DEMO_STEPS) + ": "
        "`core.cli.DEMO_STEPS`), the last of them starting the workers and the API with the "
        "ranker on Ray Serve.",
        "",
        "## Soak",
        "",
        f"{s['seconds']:.0f} s at {s['rate']:.0f} requests/s (open loop: likes/unlikes 30 %, "
        "follows 15 %, profile, comment-thread, notification and follower-list reads) against "
        "the API, the outbox relay and the counters worker as processes (SQLite, embedded "
        f"Redis, db bus). {summary['requests']} requests, errors: {summary['errors']}; "
        f"latency p50 {summary['p50']:.1f} ms, p95 {summary['p95']:.1f} ms, p99 "
        f"{summary['p99']:.1f} ms. RSS slope over the last 80 % of the run (MiB/min): "
        f"{slopes}; flat (|slope| <= {FLAT_MIB_PER_MIN} MiB/min, or under {NOISE_MIB} MiB "
        "over the window, for each): "
        + ("yes" if s["flat"] else "NO") + ".",
        "",
        table(["minute", "API RSS MiB", "relay RSS MiB", "counters RSS MiB"],
              _rss_rows(s["samples"], max(60.0, s["seconds"] / 10))),
        "",
        "## Faults",
        "",
        "Likes and unlikes sent one after another through the whole scenario; the API, the "
        "outbox relay and the counters worker as processes on the Kafka bus (tansu), Redis a "
        "real server. `data lost`: acknowledged writes missing from the tables + committed "
        "events never applied + counters differing from the rows, after recovery. The first "
        "row is on the demo of the first section, right after its first page.",
        "",
        table(["fault", "behaviour seen", "data lost"],
              _fault_rows(f, d, first.get("replicas"))),
    ])
