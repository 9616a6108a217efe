"""Models by MLflow alias, reloaded when the alias moves: no restart, no failed request.

:class:`AliasModels` keeps one loaded model per alias. Requests only ever read: ``get`` returns
what is loaded or raises :class:`ModelUnavailable` (the caller falls back) and asks the poller
for it. The poller thread (:meth:`AliasModels.start`) resolves every wanted alias each
``poll_s``; when one points at a new version, the new model is loaded beside the old one and
swapped in with one assignment. Requests in flight finish on the model they started with; the
next ones get the new one. A version that fails to load leaves the old one serving and is
retried at the next poll. ``reelrank_model_loaded{model, alias, version}`` is 1 for what each
alias serves in this process (0 for the version it replaced).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Gauge

log = logging.getLogger(__name__)
T = TypeVar("T")
# ``livemax``: with several API processes (multiprocess mode) a version counts while any live
# process serves it; a stopped process's samples go with it.
LOADED = Gauge("reelrank_model_loaded", "1 for the model version each alias serves",
               ["model", "alias", "version"], multiprocess_mode="livemax")


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


class AliasModels(Generic[T]):
    """``get(alias)`` -> the loaded model behind ``models:/<name>@<alias>``."""

    def __init__(self, name: str, loader: Callable[[str], T]) -> None:
        self.name, self.loader = name, loader
        self._loaded: dict[str, Loaded[T]] = {}
        self._wanted: set[str] = set()
        self._errors: dict[str, str] = {}
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def started(cls, name: str, loader: Callable[[str], T], poll_s: float,
                warm: Iterable[str] = ("champion",), owner: str = "") -> AliasModels[T]:
        """Load the ``warm`` aliases now and poll every ``poll_s``. A missing model is logged
        (prefixed by ``owner``), not raised: the caller serves without it until it loads."""
        models = cls(name, loader)
        for alias in warm:
            try:
                models.load_now(alias)
            except ModelUnavailable as exc:
                log.warning("%s: %s", owner or name, exc)
        models.start(poll_s)
        return models

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
        from training import registry  # mlflow: loaded with the first model, not on import

        self._wanted.add(alias)
        try:
            version = str(registry.resolve(f"models:/{self.name}@{alias}").version)
            current = self._loaded.get(alias)
            if current is not None and current.version == version:
                return current
            model = self.loader(f"models:/{self.name}/{version}")
        except Exception as exc:
            clean = isinstance(exc, (ModelUnavailable, registry.ModelNotFound))
            msg = str(exc) if clean else repr(exc)
            self._errors[alias] = msg if msg.startswith("models:/") else \
                f"models:/{self.name}@{alias}: {msg}"
            raise ModelUnavailable(self._errors[alias]) from exc
        fresh = Loaded(model, self.name, version)
        self._loaded[alias] = fresh  # the swap: one reference assignment
        if current is not None:
            LOADED.labels(self.name, alias, current.version).set(0)
        LOADED.labels(self.name, alias, version).set(1)
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
