"""Models by MLflow alias, reloaded when the alias moves: no restart, no failed request.

:class:`AliasModels` keeps one loaded model per alias. Requests only ever read: ``get`` returns
what is loaded or raises :class:`ModelUnavailable` (the caller falls back) and asks the poller
for it. The poller thread (:meth:`AliasModels.start`) resolves every wanted alias each
``poll_s``; when one points at a new version, the new model is loaded beside the old one and
swapped in with one assignment. Requests in flight finish on the model they started with; the
next ones get the new one. A version that fails to load leaves the old one serving and is
retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelUnavailable(LookupError):
    """No version behind the alias, or it is not loaded (yet)."""


@dataclass(frozen=True)
class Loaded(Generic[T]):
    model: T
    name: str
    version: str

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"


def resolve(name: str, alias: str) -> str:
    """The version number behind ``models:/name@alias`` (:class:`ModelUnavailable` if none)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise ModelUnavailable(f"models:/{name}@{alias}: {str(exc).splitlines()[0]}") from None


class AliasModels(Generic[T]):
    """``get(alias)`` -> the loaded model behind ``models:/<name>@<alias>``."""

    def __init__(self, name: str, loader: Callable[[str], T]) -> None:
        self.name, self.loader = name, loader
        self._loaded: dict[str, Loaded[T]] = {}
        self._wanted: set[str] = set()
        self._errors: dict[str, str] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, alias: str) -> Loaded[T]:
        """The loaded model behind ``alias``; never loads on the caller's time."""
        got = self._loaded.get(alias)
        if got is not None:
            return got
        if alias not in self._wanted:
            self._wanted.add(alias)
            self._wake.set()
        raise ModelUnavailable(self._errors.get(alias, f"models:/{self.name}@{alias}: loading"))

    def versions(self) -> dict[str, str]:
        return {a: m.version for a, m in self._loaded.items()}

    def load_now(self, alias: str) -> Loaded[T]:
        """Load (or reload) ``alias`` on this thread; for start-up and the poller."""
        self._wanted.add(alias)
        try:
            version = resolve(self.name, alias)
            current = self._loaded.get(alias)
            if current is not None and current.version == version:
                return current
            model = self.loader(f"models:/{self.name}/{version}")
        except Exception as exc:
            msg = str(exc) if isinstance(exc, ModelUnavailable) else repr(exc)
            self._errors[alias] = msg if msg.startswith("models:/") else \
                f"models:/{self.name}@{alias}: {msg}"
            raise ModelUnavailable(self._errors[alias]) from exc
        fresh = Loaded(model, self.name, version)
        self._loaded[alias] = fresh  # the swap: one reference assignment
        self._errors.pop(alias, None)
        log.info("serving models:/%s/%s as @%s", self.name, version, alias)
        return fresh

    def poll(self) -> None:
        for alias in sorted(self._wanted):
            before = self._errors.get(alias)
            try:
                self.load_now(alias)
            except ModelUnavailable as exc:
                if str(exc) != before:  # say it once, not at every poll
                    current = self._loaded.get(alias)
                    log.warning("%s (serving %s)", exc, current.tag if current else "nothing")

    def start(self, poll_s: float) -> None:
        """Poll in a daemon thread every ``poll_s`` (and at once when an alias is wanted)."""

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(poll_s)
                self._wake.clear()
                if not self._stop.is_set():
                    self.poll()

        self._thread = threading.Thread(target=loop, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
