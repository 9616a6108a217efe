"""Child server processes (Redis, and the test services) that cannot outlive their parent.

A server started by a Python process is stopped by that process at exit; if the parent is
killed outright, Linux's parent-death signal still takes the child down, so no stray
``redis-server`` or broker is left holding a port or a socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Loaded up front: the pre-exec hook runs in a forked child and should do as little as it can.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    assert _libc is not None
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(cmd: Sequence[object], *, log: Path, **popen: object) -> subprocess.Popen:
    """Start ``cmd`` with stdout+stderr appended to ``log`` (a pipe could fill and block it).

    The parent-death signal fires when the *thread* that calls this ends, not the process:
    call it from a thread that outlives the child (the main thread, or one that waits)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        preexec = _die_with_parent if _libc is not None else None
        return subprocess.Popen(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            **popen,  # type: ignore[arg-type]
        )


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen,
    *,
    what: str,
    log: Path,
    timeout_s: float = 30.0,
) -> None:
    """Poll ``ready`` until true; fail with the log's tail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.returncode is not None else "timed out"
            stop(proc)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} {why} while starting; log {log}:\n{tail}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Ask politely with ``sig``, then kill; always reaps the child."""
    stop_all([proc], sig, timeout_s)


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    """``sig`` to the child, or to its whole process group (a child started with
    ``start_new_session=True`` leads one: its own children, e.g. a server's workers, too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop_all(procs: Sequence[subprocess.Popen], sig: int = signal.SIGTERM,
             timeout_s: float = 30.0, *, group: bool = False) -> list[int]:
    """Stop every child: ``sig`` to all at once (they shut down in parallel), wait for them
    together up to ``timeout_s``, SIGKILL whoever is left, reap all. ``group``: signal each
    child's process group (children started in their own session). Returns the pids that had
    to be killed, so a caller can say so."""
    for p in procs:
        if p.poll() is None:
            _signal(p, sig, group)
    deadline = time.monotonic() + timeout_s
    killed = []
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            killed.append(p.pid)
            _signal(p, signal.SIGKILL, group)
            p.wait()
        if group:  # the leader is gone; its group may not be
            _signal(p, signal.SIGKILL, group)
    return killed
