"""The load generator's cached mode: the first pages behind the cursors are a step of their own
(``prime``), so a benchmark metering the server's CPU for cached pages leaves them out, and
the cached run then sends nothing but next pages along each user's cursor chain."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from benchmarks.loadgen import PAGES_PER_USER, chains, main, prime, run
from benchmarks.servers import free_port


class FeedStub:
    """A feed whose cursors name their user and page: ``<token>:<n>``; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        token = headers[b"authorization"].decode().removeprefix("Bearer ")
        cursor = parse_qs(scope["query_string"].decode()).get("cursor", [None])[0]
        self.calls.append((token, cursor))
        page = 0 if cursor is None else int(cursor.rsplit(":", 1)[1]) + 1
        body = f'{{"videos": [{{"video_id": {page}}}], "next_cursor": "{token}:{page}"}}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


@pytest.fixture
def stub() -> Iterator[tuple[FeedStub, str]]:
    app, port = FeedStub(), free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_cached_pages_follow_primed_cursor_chains(stub: tuple[FeedStub, str]) -> None:
    app, base = stub
    tokens = [f"u{i}" for i in range(10)]
    rate, seconds = 20.0, 1.0  # 20 cached pages: 20 // PAGES_PER_USER users, a call each
    users = chains(tokens, rate, seconds)
    assert len(users) == int(rate * seconds / PAGES_PER_USER) == 2

    cursors = asyncio.run(prime(base, users, 20, 5.0))
    assert cursors == ["u0:0", "u1:0"]
    assert sorted(app.calls) == [("u0", None), ("u1", None)]

    app.calls.clear()
    result = asyncio.run(run(base, tokens, "cached", rate, seconds, 20, 5.0, cursors))
    assert len(result["records"]) == 20
    assert all(r["status"] == 200 and r["cached"] for r in result["records"])
    assert all(cursor is not None for _, cursor in app.calls)  # no first page in the run
    for user in users:  # each user's chain advances one page a call
        sent = [cursor for token, cursor in app.calls if token == user]
        assert sent == [f"{user}:{n}" for n in range(len(sent))] and len(sent) == 10


def test_a_cached_run_without_cursors_primes_them_first(stub: tuple[FeedStub, str],
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    app, base = stub
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a\nb\nc\n")
    main(["--base", base, "--tokens", str(tokens), "--mode", "cached", "--rate", "16",
          "--seconds", "1"])
    result = json.loads(capsys.readouterr().out)
    assert sorted(c for c in app.calls if c[1] is None) == [("a", None), ("b", None)]
    assert len(result["records"]) == 16 and all(r["cached"] for r in result["records"])


def test_a_cached_run_needs_primed_cursors() -> None:
    with pytest.raises(ValueError, match="primed cursors"):
        asyncio.run(run("http://127.0.0.1:1", ["a"], "cached", 8.0, 1.0, 20, 1.0))
