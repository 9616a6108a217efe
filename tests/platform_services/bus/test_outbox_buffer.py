"""The outbox buffer (the feeds' exposure log): every queued event written once, in order, in
batches; kept while the database is down and written when it is back; bounded in memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from core.events import ExperimentExposure, decode
from platform_services.bus.models import OutboxRow
from platform_services.bus.outbox import OutboxBuffer
from platform_services.storage.db import make_engine, migrate, session_factory


@pytest.fixture
def sessions(tmp_path: Path):  # noqa: ANN201
    url = f"sqlite:///{tmp_path}/state.db"
    migrate(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def page(user: int, n: int = 0) -> ExperimentExposure:
    return ExperimentExposure(user_id=user, request_id=f"r{user}-{n}", video_ids=[n])


def logged(sessions) -> list[ExperimentExposure]:  # noqa: ANN001
    with sessions() as s:
        return [decode(r.value) for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def count(name: str, result: str) -> float:
    return REGISTRY.get_sample_value("reelrank_outbox_buffered_events_total",
                                     {"buffer": name, "result": result}) or 0.0


def test_every_event_is_written_once_in_order(sessions) -> None:  # noqa: ANN001
    buf = OutboxBuffer(sessions, "t-order", interval_s=60)  # only the flushes below write
    before = count("t-order", "written")
    try:
        threads = [threading.Thread(target=lambda u=u: [buf.put(page(u, i)) for i in range(200)])
                   for u in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert logged(sessions) == []  # queued, not written
        assert buf.flush() == 800 and buf.flush() == 0
    finally:
        buf.close()
    got = logged(sessions)
    assert len(got) == 800
    for u in range(4):
        assert [e.video_ids[0] for e in got if e.user_id == u] == list(range(200))
    assert count("t-order", "written") - before == 800


def test_the_thread_writes_within_the_interval_and_close_writes_the_rest(sessions) -> None:  # noqa: ANN001
    buf = OutboxBuffer(sessions, "t-interval", interval_s=0.05)
    try:
        buf.put(page(1), page(2))
        deadline = time.monotonic() + 10
        while len(logged(sessions)) < 2:
            assert time.monotonic() < deadline, "not written by the background thread"
            time.sleep(0.02)
    finally:
        buf.close()
    closing = OutboxBuffer(sessions, "t-close", interval_s=60)
    closing.put(page(3))
    closing.close()
    assert [e.user_id for e in logged(sessions)] == [1, 2, 3]


def test_events_wait_while_the_database_is_down(sessions, tmp_path: Path) -> None:  # noqa: ANN001
    down = make_engine(f"sqlite:///{tmp_path}/no-such-dir/state.db")  # cannot be opened
    buf = OutboxBuffer(session_factory(down), "t-down", interval_s=60, max_pending=5)
    dropped = count("t-down", "dropped")
    try:
        buf.put(*(page(u) for u in range(4)))
        assert buf.flush() == 0  # the error is logged, the events kept
        buf.put(page(4), page(5), page(6))  # 7 > max_pending: the two oldest go
        assert count("t-down", "dropped") - dropped == 2
        assert buf.flush() == 0
        buf.sessions = sessions  # the database is back
        assert buf.flush() == 5
    finally:
        buf.close()
        down.dispose()
    assert [e.user_id for e in logged(sessions)] == [2, 3, 4, 5, 6]
