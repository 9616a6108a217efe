"""Logging for every process: one stderr handler, JSON lines or key=value text.

JSON (``log_format=json``, python-json-logger) is what a log shipper parses: one object per
line with ``time``, ``level``, ``logger``, ``message``, the ``kv(...)`` fields flattened in,
and the fields of the current :func:`log_context` (the API's ``request_id``; a worker's
``consumer``, ``topic`` and ``event_id``). Text is the same line for a person at a terminal.
The context lives in a :class:`contextvars.ContextVar`, so it follows a request through
``await`` and ``asyncio.to_thread`` (the worker threads FastAPI runs sync routes on) and never
leaks into a concurrent request.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]
# Libraries that log routine calls at INFO: Feast a registry refresh on nearly every store
# access (37 lines in one `make demo`), httpx a line per request the demo's traffic and the
# experiment simulator send (hundreds a minute), burying the progress lines, and faiss's
# loader its search for a build the wheel does not ship ("ModuleNotFoundError ... avx512",
# which reads as a failure, before "Successfully loaded faiss"). Their warnings still show,
# and everything at DEBUG (``reelrank -v``).
CHATTY_LOGGERS = ("feast.infra.registry.registry", "httpx", "faiss.loader")
_context: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "reelrank_log_context", default=None)


def current_context() -> dict[str, object]:
    """The fields every record logged now carries (empty outside a request or an event)."""
    return _context.get() or {}


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add up)."""
    token = _context.set({**current_context(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {**current_context(), **(getattr(record, "kv", None) or {})}


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extra = _fields(record)
        if extra:
            base += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class _JsonFormatter(JsonFormatter):
    """python-json-logger with our field names and the context / ``kv`` fields at top level."""

    def __init__(self) -> None:
        super().__init__("{levelname}{name}{message}", style="{", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"},
                         reserved_attrs=[*_RESERVED, "kv"])

    def add_fields(self, log_data: dict, record: logging.LogRecord,
                   message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, value in _fields(record).items():
            log_data.setdefault(key, value)


_RESERVED = list(vars(logging.LogRecord("", 0, "", 0, "", None, None))) + ["message", "asctime"]
_FORMATTERS: dict[str, type[logging.Formatter]] = {
    "json": _JsonFormatter, "text": _KeyValueFormatter}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners and daemons swap it)."""

    def __init__(self, fmt: LogFormat = "text") -> None:
        super().__init__()
        self.fmt: LogFormat = fmt
        self.setFormatter(_FORMATTERS[fmt]())

    @property
    def stream(self):  # noqa: ANN201 - a text stream
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str | None = "INFO", fmt: LogFormat | None = None) -> None:
    """Log to stderr once; later calls change the level (``None``: keep it) and the format
    (``None``: keep it; text until one is chosen)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler(fmt or "text")
        root.addHandler(handler)
    elif fmt is not None and fmt != handler.fmt:
        handler.fmt = fmt
        handler.setFormatter(_FORMATTERS[fmt]())
    if level is not None:
        root.setLevel(level)
        quiet = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(quiet)


def logging_configured() -> bool:
    """Whether this process has its stderr handler (a uvicorn worker process starts without)."""
    return any(isinstance(h, _StderrHandler) for h in logging.getLogger().handlers)


def kv(**fields: object) -> dict[str, dict[str, object]]:
    """``log.info("msg", extra=kv(event_id=...))`` adds ``key=value`` pairs to the line."""
    return {"kv": fields}
