"""The API side of the ranker hop: the requests of pages computed back to back share one call
(:class:`serving.ranking.ray_serve.CallBatch`, sent as :class:`serving.feed.pipeline.ComputeSlot`
decides)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from serving.feed.degrade import Trace
from serving.feed.pipeline import ComputeSlot
from serving.ranking.backends import RankRequest
from serving.ranking.ray_serve import CallBatch


class FakeDeployment:
    """A handle that records each call's aliases; a call answers once ``go`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.go = threading.Event()
        self.go.set()
        self.cancelled = 0
        self.score = SimpleNamespace(remote=self._remote)

    def _remote(self, requests: list[tuple[str, RankRequest]]) -> SimpleNamespace:
        self.calls.append([alias for alias, _ in requests])
        n = len(self.calls)

        def result(timeout_s: float) -> list:
            if not self.go.wait(timeout_s):
                raise TimeoutError("slow replica")
            return [ValueError("no such alias") if alias == "bad" else
                    (np.full(len(req), float(n)), f"m/{alias}") for alias, req in requests]

        def cancel() -> None:
            self.cancelled += 1

        return SimpleNamespace(result=result, cancel=cancel)


def request(n: int = 3) -> RankRequest:
    return RankRequest({"video_id": np.arange(n)}, {"user_id": 1})


def test_queued_requests_go_as_one_call_each_with_its_own_result() -> None:
    dep = FakeDeployment()
    batch = CallBatch(dep, max_batch=3)
    futures = [batch.add(alias, request(), 1) for alias in ("a", "bad")]
    assert not batch.full and not any(f.done() for f in futures)
    gave_up = batch.add("gone", request(), 1)
    gave_up.cancel()  # its page stopped waiting: not sent
    assert batch.full
    batch.send()
    assert dep.calls == [["a", "bad"]]
    scores, version = futures[0].result(0)
    assert version == "m/a" and len(scores) == 3
    with pytest.raises(ValueError, match="no such alias"):
        futures[1].result(0)  # its own error, not its neighbour's
    batch.send()  # nothing queued: no call
    assert len(dep.calls) == 1


def test_a_call_past_its_budget_fails_its_requests_and_is_cancelled() -> None:
    dep = FakeDeployment()
    dep.go.clear()
    batch = CallBatch(dep, max_batch=8)
    futures = [batch.add("a", request(), 0.05) for _ in range(2)]
    batch.send()
    assert dep.cancelled == 1  # the replica's slot freed
    for f in futures:
        with pytest.raises(TimeoutError):
            f.result(0)


def test_pages_waiting_to_start_join_the_call_and_the_last_one_sends_it() -> None:
    dep = FakeDeployment()
    batch = CallBatch(dep, max_batch=8)
    slot, order = ComputeSlot(batch.send), []
    first_in = threading.Event()

    def page(name: str, rank: bool = True) -> None:
        with slot.hold(Trace()):
            first_in.set()
            time.sleep(0.05)  # the others queue for the slot meanwhile
            if not rank:
                order.append(f"{name} ranks nothing")
                return
            pending = batch.add(name, request(), 1)
            if slot.starting:
                with slot.released():
                    pending.result(5)
            else:
                batch.send()
            order.append(f"{name} done")

    first = threading.Thread(target=page, args=("a",))
    first.start()
    assert first_in.wait(5)
    rest = [threading.Thread(target=page, args=(n,)) for n in ("b", "c")]
    for t in rest:
        t.start()
        time.sleep(0.01)
    for t in (first, *rest):
        t.join(5)
    assert dep.calls == [["a", "b", "c"]], dep.calls
    assert order[0] == "c done"  # the sender finishes first, then the pages it took along
    # A page that stepped out is sent by the slot's idle hook when the page behind it
    # ranks nothing.
    first_in.clear()
    first = threading.Thread(target=page, args=("d",))
    first.start()
    assert first_in.wait(5)
    last = threading.Thread(target=page, args=("e", False))
    last.start()
    for t in (first, last):
        t.join(5)
    assert dep.calls[-1] == ["d"] and "d done" in order


def test_pages_start_in_the_order_they_came() -> None:
    """Waking every waiter lets the OS pick the next page: tickets keep arrival order."""
    slot, started = ComputeSlot(), []
    first_in, all_queued = threading.Event(), threading.Event()

    def page(name: str) -> None:
        with slot.hold(Trace()):
            started.append(name)
            first_in.set()
            all_queued.wait(5)

    names = [f"p{i}" for i in range(8)]
    threads = [threading.Thread(target=page, args=(n,)) for n in names]
    threads[0].start()
    assert first_in.wait(5)
    for queued, t in enumerate(threads[1:], start=1):
        t.start()
        deadline = time.monotonic() + 5
        while slot.starting < queued and time.monotonic() < deadline:  # in the queue
            time.sleep(0.001)
    all_queued.set()
    for t in threads:
        t.join(5)
    assert started == names
