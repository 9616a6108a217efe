"""Which experiments and variants a user is in, and so what the for-you feed serves them.

Assignment is a pure function of the user and the running experiments, so every API process
agrees without coordination and a user keeps their variant for an experiment's whole life:

* **layer**: ``hash("layer", layer, user) mod 10,000`` is the user's bucket in the layer; an
  experiment owns a contiguous slice of the layer's buckets (allocated at start), so running
  experiments of one layer never share a user. Layers hash independently, so a user's
  variants in two layers are independent.
* **holdout**: ``hash(salt, "holdout", user)`` below the holdout share keeps the user on
  production, logged as the ``holdout`` arm (a reference that no variant touched).
* **variant**: ``hash(salt, "variant", user) mod 10,000`` against the cumulative weights.

Each hash is BLAKE2b of the parts, keyed by the experiment's random salt where one is
involved, so it is uniform and unrelated to user-id order or to any other experiment.

The feed calls :meth:`ExperimentAssigner.assign` per first page; the assigner keeps the
running experiments in memory and re-reads them every ``experiments_refresh_s`` in a
background thread (a stopped experiment stops assigning within that time). :func:`assign` is
the no-experiment default (everyone on the champions) for processes without a database.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

BUCKETS = 10_000
HOLDOUT = "holdout"
# Pipeline parameters an arm may set; experiments in different layers may not set the same.
PARAMS = ("ranker_alias", "retrieval_alias", "quotas", "explore_slots", "score_weights")


def bucket(*parts: object) -> int:
    """A uniform bucket in ``[0, BUCKETS)`` from the parts' BLAKE2b hash."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Arm:
    experiment: str
    variant: str


@dataclass(frozen=True)
class Assignment:
    """What the feed serves one user: aliases, pipeline parameters, and the arms (experiment,
    variant) to log exposures under. ``None`` parameters mean production's."""

    arms: tuple[Arm, ...] = ()
    ranker_alias: str = "champion"
    retrieval_alias: str = "champion"
    quotas: Mapping[str, float] | None = None
    explore_slots: float | None = None
    score_weights: Mapping[str, float] | None = None

    @property
    def experiment(self) -> str | None:
        return self.arms[0].experiment if self.arms else None

    @property
    def variant(self) -> str | None:
        return self.arms[0].variant if self.arms else None


CONTROL = Assignment()


def assign(user_id: int, region: str | None = None) -> Assignment:
    """No experiments: everyone gets the champions (processes without a database)."""
    return CONTROL


@dataclass(frozen=True)
class LiveVariant:
    name: str
    upper: int  # cumulative weight in buckets: the user's bucket < upper picks this one
    params: dict[str, Any]


@dataclass(frozen=True)
class LiveExperiment:
    """A running experiment as assignment needs it (immutable: swapped whole on refresh)."""

    name: str
    salt: str
    layer: str
    bucket_lo: int
    bucket_hi: int
    holdout: int  # buckets of 10,000 held out
    regions: frozenset[str] | None
    variants: tuple[LiveVariant, ...]

    def arm(self, user_id: int, region: str | None) -> LiveVariant | None:
        """The user's arm, or None when the user is outside this experiment."""
        if self.regions is not None and region not in self.regions:
            return None
        if not self.bucket_lo <= bucket("layer", self.layer, user_id) < self.bucket_hi:
            return None
        if self.holdout and bucket(self.salt, HOLDOUT, user_id) < self.holdout:
            return LiveVariant(HOLDOUT, 0, {})
        b = bucket(self.salt, "variant", user_id)
        return next(v for v in self.variants if b < v.upper)


def live(experiment: Any) -> LiveExperiment:
    """A :class:`LiveExperiment` from an ORM :class:`~experiments.models.Experiment`."""
    upper, variants = 0, []
    for v in experiment.variants:
        upper += round(v.weight_pct * BUCKETS / 100)
        params = {k: v.params[k] for k in ("quotas", "explore_slots", "score_weights")
                  if v.params.get(k) is not None}
        params |= {k: a for k in ("ranker_alias", "retrieval_alias")
                   if (a := getattr(v, k)) is not None}
        variants.append(LiveVariant(v.name, upper, params))
    if variants:  # the split sums to 100 % (spec.py); no rounding can leave a gap at the top
        variants[-1] = LiveVariant(variants[-1].name, BUCKETS, variants[-1].params)
    regions = (experiment.population or {}).get("regions")
    return LiveExperiment(
        experiment.name, experiment.salt, experiment.layer, experiment.bucket_lo or 0,
        experiment.bucket_hi or 0, round(experiment.holdout_pct * BUCKETS / 100),
        frozenset(regions) if regions else None, tuple(variants))


def assign_user(experiments: Iterable[LiveExperiment], user_id: int,
                region: str | None = None) -> Assignment:
    """Merge the user's arms of every running experiment (layers set disjoint parameters)."""
    arms: list[Arm] = []
    params: dict[str, Any] = {}
    for exp in experiments:
        got = exp.arm(user_id, region)
        if got is not None:
            arms.append(Arm(exp.name, got.name))
            params |= got.params
    if not arms:
        return CONTROL
    return Assignment(arms=tuple(arms), **params)


@dataclass
class ExperimentAssigner:
    """The running experiments, kept in memory and refreshed in the background."""

    sessions: sessionmaker[Session]
    refresh_s: float = 10.0
    # Called with the aliases the running variants name, after each refresh that changed them
    # (the feed warms those models before the first request needs them).
    on_aliases: Callable[[set[str], set[str]], None] | None = None
    experiments: tuple[LiveExperiment, ...] = ()
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def started(cls, sessions: sessionmaker[Session], refresh_s: float,
                on_aliases: Callable[[set[str], set[str]], None] | None = None,
                ) -> ExperimentAssigner:
        assigner = cls(sessions, refresh_s, on_aliases)
        try:
            assigner.refresh()
        except Exception:  # no table yet, database down: nobody in experiments until it is up
            log.exception("experiments: running experiments not loaded; retrying")
        assigner._thread = threading.Thread(target=assigner._loop, name="experiments",
                                            daemon=True)
        assigner._thread.start()
        return assigner

    def refresh(self) -> None:
        from experiments.models import Experiment, Status

        with self.sessions() as session:
            rows = session.scalars(select(Experiment).where(
                Experiment.status == Status.RUNNING.value).order_by(Experiment.id)).all()
            fresh = tuple(live(e) for e in rows)
        if fresh != self.experiments:
            self.experiments = fresh  # one reference swap: requests never see half of it
            log.info("experiments running: %s", ", ".join(e.name for e in fresh) or "none")
            if self.on_aliases is not None:
                ranker = {v.params["ranker_alias"] for e in fresh for v in e.variants
                          if "ranker_alias" in v.params}
                retrieval = {v.params["retrieval_alias"] for e in fresh for v in e.variants
                             if "retrieval_alias" in v.params}
                self.on_aliases(ranker, retrieval)

    def assign(self, user_id: int, region: str | None = None) -> Assignment:
        return assign_user(self.experiments, user_id, region)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:
                log.exception("experiments: refresh failed; keeping the previous set")

    def stop(self) -> None:
        self._stop.set()
