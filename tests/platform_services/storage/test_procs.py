"""The one child-stopping helper: polite signal, shared deadline, SIGKILL, reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from platform_services.storage.procs import stop_all

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "print('ready', flush=True); time.sleep(60)"
# A parent that starts a grandchild (like `mlflow server` its workers) and exits on SIGTERM
# without stopping it.
LEAVES_CHILD = ("import subprocess, sys, time; "
                "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                "print(c.pid, flush=True); time.sleep(60)")


def _started(cmd: str, **popen: object) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", cmd], stdout=subprocess.PIPE, text=True,
                         **popen)  # type: ignore[call-overload]
    return p


def test_polite_children_stop_on_sigterm_and_stubborn_ones_are_killed() -> None:
    polite = _started("import time; print('ready', flush=True); time.sleep(60)")
    stubborn = _started(IGNORES_TERM)
    for p in (polite, stubborn):
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    started = time.monotonic()
    killed = stop_all([polite, stubborn], timeout_s=1.0)
    assert time.monotonic() - started < 10
    assert killed == [stubborn.pid]
    assert polite.returncode == -15 and stubborn.returncode == -9  # both reaped


def test_group_stop_leaves_no_grandchild() -> None:
    parent = _started(LEAVES_CHILD, start_new_session=True)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert psutil.pid_exists(grandchild)
    stop_all([parent], timeout_s=5.0, group=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
                break  # killed, waiting for init to reap it
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, 9)
        raise AssertionError("the grandchild outlived its process group's stop")


def test_already_exited_children_are_just_reaped() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert stop_all([done], timeout_s=0.1) == []


def test_a_child_dies_with_the_thread_that_spawned_it(tmp_path) -> None:
    """Why the demo's start-up thread waits for the stop: PR_SET_PDEATHSIG follows threads."""
    import threading

    from platform_services.storage.procs import spawn

    started: list[subprocess.Popen] = []
    t = threading.Thread(target=lambda: started.append(
        spawn([sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "c.log")))
    t.start()
    t.join()
    try:
        assert started[0].wait(10) == -15  # SIGTERM when its parent thread ended
    finally:
        stop_all(started, timeout_s=1)
