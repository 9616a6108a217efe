"""Experiments in the database: create, start, stop, list, show. The CLI and the admin API
both call these, in the caller's transaction.

Checks that need more than the definition itself live here: the name is free, every alias a
variant names exists in the model registry, and the experiment fits its layer next to the
running ones (free buckets for its traffic share; no parameter varied by a running experiment
of another layer, since a user may be in both). Each failure is a :class:`SpecError` naming
the field; ``conflict`` marks the ones caused by other experiments (HTTP 409).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import Settings
from experiments.assignment import BUCKETS, PARAMS, live
from experiments.models import Experiment, Exposure, Status, Variant
from experiments.spec import ExperimentSpec, SpecError

# (model: "ranker" | "retrieval", alias) -> why it cannot be served, or None when it can.
AliasCheck = Callable[[str, str], str | None]


class NotFound(LookupError):
    """No experiment of that name."""


def registry_aliases(settings: Settings) -> AliasCheck:
    """Aliases checked against the MLflow registry of ``settings``."""
    from training import registry

    registry.connect(settings.mlflow_tracking_uri)
    names = {"ranker": settings.ranker_model, "retrieval": settings.retrieval_model}

    def check(model: str, alias: str) -> str | None:
        try:
            registry.resolve(f"models:/{names[model]}@{alias}")
        except registry.ModelNotFound as exc:
            return f"unknown alias {alias!r} ({exc})"
        return None

    return check


def get(session: Session, name: str) -> Experiment:
    exp = session.scalar(select(Experiment).where(Experiment.name == name))
    if exp is None:
        raise NotFound(f"no experiment named {name!r}")
    return exp


def list_experiments(session: Session, status: Status | None = None) -> list[Experiment]:
    query = select(Experiment).order_by(Experiment.id)
    if status is not None:
        query = query.where(Experiment.status == status.value)
    return list(session.scalars(query))


def new_experiment(spec: ExperimentSpec, salt: str | None = None) -> Experiment:
    """A draft :class:`Experiment` of ``spec``, not in any session (``create`` stores one; the
    offline replay uses one as it is, with its own salt per repetition)."""
    return Experiment(
        name=spec.name, hypothesis=spec.hypothesis, layer=spec.layer, traffic_pct=spec.traffic,
        holdout_pct=spec.holdout, population=spec.population.model_dump(exclude_none=True),
        primary_metric=spec.primary_metric, secondary_metrics=spec.secondary_metrics,
        guardrail_metrics=spec.guardrail_metrics, status=Status.DRAFT.value,
        salt=salt or secrets.token_hex(8), created_at=utcnow(),
        variants=[Variant(name=v.name, position=i, weight_pct=v.weight,
                          ranker_alias=v.ranker_alias, retrieval_alias=v.retrieval_alias,
                          params=v.params()) for i, v in enumerate(spec.variants)])


def create(session: Session, spec: ExperimentSpec, aliases: AliasCheck) -> Experiment:
    """A new draft experiment (flushed, not committed)."""
    if session.scalar(select(Experiment.id).where(Experiment.name == spec.name)) is not None:
        raise SpecError("name", f"an experiment named {spec.name!r} exists", conflict=True)
    for i, v in enumerate(spec.variants):
        for model in ("ranker", "retrieval"):
            alias = getattr(v, f"{model}_alias")
            if alias is not None and (why := aliases(model, alias)):
                raise SpecError(f"variants.{i}.{model}_alias", why)
    exp = new_experiment(spec)
    _fits(session, exp)  # refuse now what could never start next to the running ones
    session.add(exp)
    session.flush()
    return exp


def start(session: Session, name: str) -> Experiment:
    """Give a draft its slice of the layer and start assigning users to it."""
    exp = _in_status(session, name, Status.DRAFT, "only a draft can start")
    exp.bucket_lo, exp.bucket_hi = _fits(session, exp)
    exp.status, exp.started_at = Status.RUNNING.value, utcnow()
    session.flush()
    return exp


def stop(session: Session, name: str) -> Experiment:
    """Stop assigning (within the API's refresh interval). Every logged exposure stays."""
    exp = _in_status(session, name, Status.RUNNING, "only a running one can stop")
    exp.status, exp.stopped_at = Status.STOPPED.value, utcnow()
    session.flush()
    return exp


def _in_status(session: Session, name: str, status: Status, why: str) -> Experiment:
    """The experiment, if it is in ``status`` (a 409-style :class:`SpecError` otherwise)."""
    exp = get(session, name)
    if exp.status != status.value:
        raise SpecError("status", f"{name} is {exp.status}; {why}", conflict=True)
    return exp


def _fits(session: Session, exp: Experiment) -> tuple[int, int]:
    """The first free slice of ``exp``'s layer for its traffic, next to the running ones."""
    running = list(session.scalars(select(Experiment).where(
        Experiment.status == Status.RUNNING.value, Experiment.id != (exp.id or -1))))
    mine = _varied(exp)
    for other in running:
        if other.layer != exp.layer and (shared := mine & _varied(other)):
            raise SpecError("variants", f"{sorted(shared)} already varied by running "
                            f"experiment {other.name!r} in layer {other.layer!r}; a user can "
                            "be in both: put this one in that layer", conflict=True)
    need = round(exp.traffic_pct * BUCKETS / 100)
    taken = sorted((o.bucket_lo or 0, o.bucket_hi or 0) for o in running
                   if o.layer == exp.layer)
    lo = 0
    for a, b in [*taken, (BUCKETS, BUCKETS)]:
        if a - lo >= need:
            return lo, lo + need
        lo = max(lo, b)
    free = (BUCKETS - sum(b - a for a, b in taken)) * 100 / BUCKETS
    names = ", ".join(o.name for o in running if o.layer == exp.layer)
    raise SpecError("layer", f"overlaps running experiment(s) {names} in layer "
                    f"{exp.layer!r}: {free:g} % of it is free, {exp.traffic_pct:g} % asked; "
                    "use another layer or less traffic", conflict=True)


def _varied(exp: Experiment) -> set[str]:
    """The pipeline parameters any arm of ``exp`` sets."""
    return {k for v in live(exp).variants for k in v.params if k in PARAMS}


@dataclass(frozen=True)
class ArmCount:
    variant: str
    users: int
    pages: int


def exposure_counts(session: Session, exp: Experiment) -> list[ArmCount]:
    """Users and pages logged per arm so far."""
    rows = session.execute(
        select(Exposure.variant, func.count(func.distinct(Exposure.user_id)), func.count())
        .where(Exposure.experiment_id == exp.id).group_by(Exposure.variant)).all()
    return [ArmCount(v, int(u), int(p)) for v, u, p in sorted(rows)]


def describe(exp: Experiment) -> dict:
    """A JSON-able view of the definition and its state (CLI ``show`` and the API)."""
    return {
        "name": exp.name, "hypothesis": exp.hypothesis, "status": exp.status,
        "layer": exp.layer, "traffic": exp.traffic_pct, "holdout": exp.holdout_pct,
        "population": exp.population or {}, "primary_metric": exp.primary_metric,
        "secondary_metrics": list(exp.secondary_metrics),
        "guardrail_metrics": list(exp.guardrail_metrics),
        "variants": [{"name": v.name, "weight": v.weight_pct, "ranker_alias": v.ranker_alias,
                      "retrieval_alias": v.retrieval_alias, **v.params} for v in exp.variants],
        "created_at": exp.created_at, "started_at": exp.started_at,
        "stopped_at": exp.stopped_at,
    }
