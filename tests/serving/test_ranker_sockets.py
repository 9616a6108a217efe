"""The ranker's data plane (:mod:`serving.ranking.sockets`, :mod:`serving.ranking.wire`): calls
straight to a replica's socket, on a real server (the replica's asyncio server, on a loop in
a thread here) over real Unix and TCP sockets."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from serving.ranking import wire
from serving.ranking.backends import RankRequest, Result, score_many, to_columns
from serving.ranking.models import ModelUnavailable
from serving.ranking.ray_serve import CallBatch
from serving.ranking.sockets import EndpointDown, ReplicaSockets, close_server, listen
from tests.serving.test_ranker_calls import FakeDeployment
from tests.serving.test_ranking_history import _bundle, _request

NAMES = itertools.count()


def request(n: int = 4, user: int = 1) -> RankRequest:
    objects = np.empty(n, object)
    for i in range(n):
        objects[i] = [i, i + 1]  # a list per row (an object column) stays one element
    return RankRequest({"video_id": np.arange(n, dtype=np.int64), "v_rate": np.linspace(0, 1, n),
                        "v_flag": np.ones(n, bool), "tags": objects},
                       {"user_id": user, "history": [3, 2, 1], "ctx_hour": np.int64(7)},
                       weights={"like": 2.0})


async def doubled(requests: list[tuple[str, RankRequest]]) -> list[Result]:
    """A stand-in replica: twice each video id, or the alias's error; ``slow`` sleeps first."""
    if any(alias == "slow" for alias, _ in requests):
        await asyncio.sleep(0.5)
    return [ModelUnavailable("not loaded") if alias == "missing" else
            ValueError("bad weights") if alias == "bad" else
            (2.0 * r.items["video_id"].astype(np.float32), f"m/{alias}")
            for alias, r in requests]


@contextmanager
def replica(transport: str = "unix", score=doubled) -> Iterator[str]:  # noqa: ANN001
    """A replica's socket server on its own loop (as on the replica's), its URL yielded."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, url = asyncio.run_coroutine_threadsafe(
        listen(score, transport, "127.0.0.1", f"test{next(NAMES)}"), loop).result(10)

    async def stop() -> None:  # the server and its connections' handlers
        close_server(server, url)
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_request_crosses_the_wire_unchanged() -> None:
    sent = request()
    [(alias, got)] = wire.decode_call(wire.unpack(wire.encode_call([("champion", sent)])[4:]))
    assert alias == "champion" and got.user == {"user_id": 1, "history": [3, 2, 1], "ctx_hour": 7}
    assert got.weights == {"like": 2.0} and set(got.items) == set(sent.items)
    for c in ("video_id", "v_rate"):
        assert got.items[c].dtype == sent.items[c].dtype
        assert np.array_equal(got.items[c], sent.items[c])
    assert got.items["tags"].dtype == object and got.items["tags"][2] == [2, 3]
    answer = wire.encode_results([(np.arange(3, dtype=np.float32), "m/7"),
                                  ModelUnavailable("no model"), ValueError("boom")])
    scores, missing, failed = wire.decode_results(wire.unpack(answer[4:]))
    assert scores[1] == "m/7" and np.array_equal(scores[0], [0, 1, 2])
    assert isinstance(missing, ModelUnavailable) and str(missing) == "no model"
    assert isinstance(failed, wire.RankerError) and "ValueError: boom" in str(failed)


def test_what_is_not_a_call_is_refused_before_it_is_used() -> None:
    with pytest.raises(wire.WireError, match="past"):
        wire.body_length(wire.HEADER.pack(wire.MAX_FRAME + 1))
    with pytest.raises(wire.WireError):
        wire.unpack(b"\xc1 not msgpack")
    with pytest.raises(wire.WireError, match="not a ranker call"):
        wire.decode_call(wire.unpack(wire.frame([["a", {"user": {}}]])[4:]))
    # An array extension claiming an object dtype (what would need a pickle) is refused.
    head = wire.msgpack.packb(["|O", [1]])
    forged = wire.msgpack.packb(wire.msgpack.ExtType(1, head + b"\0" * 8))
    with pytest.raises(wire.WireError, match="dtype"):
        wire.unpack(forged)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_calls_reach_the_replica_and_each_request_gets_its_own_result(transport: str) -> None:
    with replica(transport) as url:
        assert url.startswith(f"{transport}://")
        sockets = ReplicaSockets(lambda: {url})
        sockets.refresh()
        for _ in range(3):  # one connection, reused
            ok, missing, bad = sockets.call(
                [("champion", request(4)), ("missing", request(2)), ("bad", request(2))], 5)
            assert ok[1] == "m/champion" and np.array_equal(ok[0], [0, 2, 4, 6])
            assert isinstance(missing, ModelUnavailable) and isinstance(bad, wire.RankerError)
        # A call that cannot be encoded fails alone: the replica stays in the pool.
        odd = RankRequest({"video_id": np.arange(2)}, {"user_id": object()})
        with pytest.raises(TypeError, match="cannot send"):
            sockets.call([("champion", odd)], 5)
        assert sockets.urls == [url]
        sockets.close()


def test_a_real_ranker_scores_a_call_from_the_socket_as_it_scores_in_process() -> None:
    """The replica scores arrays that point into the received frame (read-only): the same
    scores as in process, and no warning from torch about them."""
    bundle = _bundle()

    class Models:
        def get(self, alias: str):  # noqa: ANN202
            return type("Loaded", (), {"model": bundle, "tag": "ranker/1"})

    async def score(requests: list[tuple[str, RankRequest]]) -> list[Result]:
        return score_many(Models(), requests)  # type: ignore[arg-type]

    a, b = _request(1, [1, 2], [1, 2, 3]), _request(2, [3], [2, 3])
    with replica("unix", score) as url, warnings.catch_warnings():
        warnings.simplefilter("error")
        sockets = ReplicaSockets(lambda: {url})
        sockets.refresh()
        (got_a, version), (got_b, _) = sockets.call([("champion", a), ("champion", b)], 5)
        sockets.close()
    assert version == "ranker/1"
    alone = [bundle.score(*to_columns([r])) for r in (a, b)]
    assert np.allclose(got_a, alone[0], atol=1e-6) and np.allclose(got_b, alone[1], atol=1e-6)


def test_a_call_past_its_budget_times_out_and_the_next_gets_its_own_answer() -> None:
    with replica() as url:
        sockets = ReplicaSockets(lambda: {url})
        sockets.refresh()
        with pytest.raises(TimeoutError):
            sockets.call([("slow", request())], 0.05)
        # The late answer of the slow call is not read as this call's.
        [(scores, version)] = sockets.call([("next", request(2))], 5)
        assert version == "m/next" and np.array_equal(scores, [0, 2])
        assert sockets.urls == [url]
        sockets.close()


def test_a_garbage_frame_closes_only_its_connection() -> None:
    with replica() as url:
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(url.removeprefix("unix://"))
        raw.sendall(wire.HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1")
        assert raw.recv(16) == b""  # closed, nothing answered
        raw.close()
        sockets = ReplicaSockets(lambda: {url})
        sockets.refresh()
        assert sockets.call([("champion", request(1))], 5)[0][1] == "m/champion"
        sockets.close()


def test_an_unreachable_replica_is_dropped_and_the_call_goes_through_the_handle() -> None:
    asked = threading.Event()

    def discover() -> set[str]:
        asked.set()
        return {dead}

    with replica() as dead:
        pass
    # Killed, not stopped: its socket file stays, with nothing listening on it.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(dead.removeprefix("unix://"))
    stale.close()
    sockets = ReplicaSockets(discover, refresh_s=60)
    sockets.start()
    asked.clear()
    with pytest.raises(EndpointDown):
        sockets.call([("champion", request())], 1)
    assert sockets.urls == []  # dropped at once
    assert not Path(dead.removeprefix("unix://")).exists()  # and its stale file removed
    assert asked.wait(5)  # and the deployment asked again, without waiting 60 s
    with pytest.raises(EndpointDown):  # dead for good: neither named nor found again
        sockets.call([("champion", request())], 1, url=dead)
    sockets.refresh()
    assert sockets.urls == []
    deployment = FakeDeployment()
    batch = CallBatch(deployment, max_batch=4, sockets=sockets)
    future = batch.add("champion", request(3), 1)
    batch.send()
    assert deployment.calls == [["champion"]]  # the handle took it
    assert future.result(0)[1] == "m/champion"
    sockets.close()


def test_the_batch_goes_over_the_socket_when_a_replica_listens() -> None:
    with replica() as url:
        sockets = ReplicaSockets(lambda: {url})
        sockets.refresh()
        deployment = FakeDeployment()
        batch = CallBatch(deployment, max_batch=4, sockets=sockets)
        futures = [batch.add(alias, request(2), 1) for alias in ("a", "missing")]
        batch.send()
        assert deployment.calls == []  # nothing through the handle
        assert futures[0].result(0)[1] == "m/a"
        with pytest.raises(ModelUnavailable):
            futures[1].result(0)
        sockets.close()
