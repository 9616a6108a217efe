"""The event backbone: bus backends, the transactional outbox and the worker framework."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import Engine

from platform_services.bus.base import Consumer, EventBus, Message, Record


def open_bus(event_bus_url: str, engine: Engine) -> EventBus:
    """``kafka://host:port[,host:port]`` or ``db://`` (the log table in ``engine``'s database)."""
    scheme = urlsplit(event_bus_url).scheme
    if scheme == "db":
        from platform_services.bus.db_log import DbBus

        return DbBus(engine)
    if scheme == "kafka":
        from platform_services.bus.kafka import KafkaBus

        return KafkaBus(event_bus_url.removeprefix("kafka://").rstrip("/"))
    raise ValueError(f"event_bus_url: unsupported scheme {scheme!r} (db:// or kafka://)")


__all__ = ["Consumer", "EventBus", "Message", "Record", "open_bus"]
