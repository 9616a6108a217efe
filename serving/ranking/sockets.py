"""The ranker's data plane: each replica listens on a socket of its own and the API sends it the
call's arrays directly (:mod:`serving.ranking.wire`).

Ray Serve deploys, scales, health-checks and reconfigures the replicas; each publishes where
it listens in Ray's key-value store (:mod:`serving.ranking.ray_serve`). A call through the
handle costs ~4.4 ms of CPU across the caller, the replica and Ray for a call that does
nothing (router, gRPC, pickling), as much as scoring the page; straight to the replica's
socket the same call costs ~1.2 ms (``benchmarks/results/ray_hop.md``).

:class:`ReplicaSockets` is the API side: a pool of blocking connections per replica (a call
is made on the thread of the page that sends it), the replica with the fewest of this
process's calls in flight chosen for each. A replica that cannot be reached is dropped at
once and the call goes through the handle (Serve routes it to a live replica); the
published endpoints are read again at that moment and every ``refresh_s`` (every second
while none is known), which also finds replicas added since.

What bypassing Serve's router gives up: Serve's request metrics do not count these calls (so
Serve autoscaling, not configured here, would not see them), ``max_ongoing_requests`` does not
bound them (the API's ``feed_max_inflight`` and batch size do), and each API process balances
by its own calls in flight rather than by Serve's view of every replica's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.config import RankerTransport
from serving.ranking import wire
from serving.ranking.backends import RankRequest, Result

log = logging.getLogger(__name__)
Score = Callable[[list[tuple[str, RankRequest]]], Awaitable[list[Result]]]


class EndpointDown(ConnectionError):
    """The replica's socket cannot be reached or broke mid-call: no answer came back (a call
    only reads, so it can be made again through the handle)."""


async def listen(score: Score, transport: RankerTransport, host: str, name: str
                 ) -> tuple[asyncio.Server, str]:
    """A server on the running loop answering each frame with ``score``'s results, and its
    URL, unique to ``name`` (the replica's id: a URL is never a later replica's):
    ``unix:///tmp/reelrank-ranker-<name>.sock`` (a socket file only this user may open) or
    ``tcp://host:port/<name>``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(wire.HEADER.size)
                body = await reader.readexactly(wire.body_length(header))
                results = await score(wire.decode_call(wire.unpack(body)))
                writer.write(wire.encode_results(results))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the caller closed (or gave up on) the connection
        except wire.WireError as exc:  # not our protocol: nothing to answer on this stream
            log.warning("ranker socket: closing a connection: %s", exc)
        finally:
            writer.close()

    if transport == "unix":
        path = os.path.join(tempfile.gettempdir(), f"reelrank-ranker-{name}.sock")
        server = await asyncio.start_unix_server(serve, path=path)
        os.chmod(path, 0o600)
        return server, f"unix://{path}"
    server = await asyncio.start_server(serve, host=host, port=0)
    return server, f"tcp://{host}:{server.sockets[0].getsockname()[1]}/{name}"


def close_server(server: asyncio.Server | None, url: str | None) -> None:
    if server is not None:
        server.close()
    if url:
        _unlink(url)


@dataclass
class _Endpoint:
    """One replica's socket as this process uses it."""

    busy: int = 0  # this process's calls in flight to it
    idle: list[socket.socket] = field(default_factory=list)  # open connections, free


class ReplicaSockets:
    """Calls to the replicas' sockets from one API process (any thread)."""

    def __init__(self, discover: Callable[[], set[str]], refresh_s: float = 30.0) -> None:
        self._discover, self._refresh_s = discover, refresh_s
        self._lock = threading.Lock()
        self._pool: dict[str, _Endpoint] = {}
        self._dead: set[str] = set()  # dropped: a replica that died (its URL is never reused)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        return list(self._pool)

    def refresh(self) -> None:
        """Add the endpoints the deployment reports, but those that failed (a killed replica
        cannot take its URL back)."""
        try:
            found = self._discover()
        except Exception as exc:  # Serve busy or down: the next round tries again
            log.warning("ranker sockets: could not list the replicas' endpoints: %r", exc)
            return
        with self._lock:
            for url in found - set(self._pool) - self._dead:
                self._pool[url] = _Endpoint()

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="ranker-sockets", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            # With no endpoint known (replicas being replaced), ask again every second.
            self._wake.wait(self._refresh_s if self._pool else min(self._refresh_s, 1.0))
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def call(self, requests: list[tuple[str, RankRequest]], timeout_s: float,
             url: str | None = None) -> list[Result]:
        """One call to a replica (``url``, else the least busy): its results, TimeoutError
        past ``timeout_s``, or :class:`EndpointDown` (no replica reachable; nothing scored)."""
        deadline = time.monotonic() + timeout_s
        frame = wire.encode_call(requests)  # a call that cannot be sent fails here, alone
        url, conn = self._checkout(url, timeout_s)
        try:
            conn.settimeout(timeout_s)
            conn.sendall(frame)
            header = _receive(conn, wire.HEADER.size, deadline)
            body = _receive(conn, wire.body_length(header), deadline)
        except TimeoutError:
            self._checkin(url, conn, broken=True)  # its answer would arrive on the next call
            raise
        except (OSError, wire.WireError) as exc:
            self._checkin(url, conn, broken=True)
            self._drop(url)
            raise EndpointDown(f"ranker replica at {url}: {exc!r}") from exc
        self._checkin(url, conn)
        return wire.decode_results(wire.unpack(body))

    def _checkout(self, url: str | None, timeout_s: float) -> tuple[str, socket.socket]:
        with self._lock:
            if url is None and self._pool:
                url = min(self._pool, key=lambda u: self._pool[u].busy)
            endpoint = self._pool.get(url or "")
            if endpoint is None:
                raise EndpointDown(f"no ranker replica endpoint known ({url or 'none'})")
            endpoint.busy += 1
            conn = endpoint.idle.pop() if endpoint.idle else None
        if conn is None:
            try:
                conn = _connect(url, timeout_s)
            except OSError as exc:
                self._checkin(url, None)
                self._drop(url)
                raise EndpointDown(f"ranker replica at {url}: {exc!r}") from exc
        return url, conn

    def _checkin(self, url: str, conn: socket.socket | None, broken: bool = False) -> None:
        with self._lock:
            endpoint = self._pool.get(url)
            if endpoint is not None:
                endpoint.busy -= 1
                if conn is not None and not broken:
                    endpoint.idle.append(conn)
                    return
        if conn is not None:
            conn.close()

    def _drop(self, url: str) -> None:
        with self._lock:
            self._dead.add(url)
            endpoint = self._pool.pop(url, None)
        for conn in endpoint.idle if endpoint else ():
            conn.close()
        _remove_if_stale(url)
        log.warning("ranker sockets: %s unreachable; calls go through the handle meanwhile", url)
        self._wake.set()  # ask the deployment again now: a replacement may be up

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            conns = [c for endpoint in self._pool.values() for c in endpoint.idle]
            self._pool = {}
        for conn in conns:
            conn.close()


def _unlink(url: str) -> None:
    if url.startswith("unix://"):
        with contextlib.suppress(OSError):
            os.unlink(urlsplit(url).path)


def _remove_if_stale(url: str) -> None:
    """A socket file nothing listens on (its replica was killed, with no shutdown to remove
    it) is removed by the caller that drops it."""
    if not url.startswith("unix://"):
        return
    try:
        _connect(url, 1.0).close()  # someone listens: not stale
    except ConnectionRefusedError:
        _unlink(url)
    except OSError:
        pass


def _connect(url: str, timeout_s: float) -> socket.socket:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout_s)
        try:
            conn.connect(parts.path)
        except OSError:
            conn.close()
            raise
        return conn
    conn = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _receive(conn: socket.socket, n: int, deadline: float) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        conn.settimeout(max(deadline - time.monotonic(), 1e-4))
        k = conn.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("closed by the replica")
        got += k
    return buf
