"""The event backbone: bus backends, the transactional outbox and the worker framework."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from platform_services.bus.base import Consumer, EventBus, Message, Record


def open_bus(event_bus_url: str, engine: Engine) -> EventBus:
    """``kafka://host:port[,host:port][?fetch_max_wait_ms=N]`` or ``db://`` (the log table in
    ``engine``'s database)."""
    url = urlsplit(event_bus_url)
    scheme = url.scheme
    if scheme == "db":
        from platform_services.bus.db_log import DbBus

        return DbBus(engine)
    if scheme == "kafka":
        from platform_services.bus.kafka import FETCH_MAX_WAIT_MS, KafkaBus

        options = {k: v[-1] for k, v in parse_qs(url.query).items()}
        unknown = set(options) - {"fetch_max_wait_ms"}
        if unknown:
            raise ValueError(f"event_bus_url: unknown option(s) {sorted(unknown)}")
        wait = options.get("fetch_max_wait_ms", str(FETCH_MAX_WAIT_MS))
        if not wait.isdigit() or not 1 <= int(wait) <= 60_000:
            raise ValueError(f"event_bus_url: fetch_max_wait_ms={wait!r}, expected 1-60000")
        return KafkaBus(url.netloc, fetch_max_wait_ms=int(wait))
    raise ValueError(f"event_bus_url: unsupported scheme {scheme!r} (db:// or kafka://)")


__all__ = ["Consumer", "EventBus", "Message", "Record", "open_bus"]
