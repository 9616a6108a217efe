"""Admin API of A/B experiments: ``/api/v1/experiments`` (the ``admin`` role only).

Create takes the same definition as ``reelrank experiment create``; a bad one is a 422 whose
``fields`` name the input (``variants.1.weight``), one clashing with a running experiment or an
existing name a 409 that names it too. Start/stop return the new state; stopping keeps every
logged exposure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from experiments import store
from experiments.models import Status
from experiments.spec import ExperimentSpec, SpecError
from serving.deps import AdminUser, SessionDep, SettingsDep
from serving.errors import error_body, error_responses

# 403: the caller's role (token and account) is below admin; 413 and 429 come from the app's
# body cap and rate limits, documented where the router is mounted.
router = APIRouter(prefix="/experiments", tags=["experiments"],
                   responses=error_responses(401, 403, 422))
Name = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class VariantOut(BaseModel):
    name: str
    weight: float
    ranker_alias: str | None = None
    retrieval_alias: str | None = None
    quotas: dict[str, float] | None = None
    explore_slots: float | None = None
    score_weights: dict[str, float] | None = None


class ArmCountOut(BaseModel):
    variant: str
    users: int
    pages: int


class ExperimentOut(BaseModel):
    name: str
    hypothesis: str
    status: Status
    layer: str
    traffic: float
    holdout: float
    population: dict[str, Any]
    primary_metric: str
    secondary_metrics: list[str]
    guardrail_metrics: list[str]
    variants: list[VariantOut]
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    exposures: list[ArmCountOut] | None = None


class ExperimentList(BaseModel):
    experiments: list[ExperimentOut]


def _out(exp: Any, session: Any = None) -> ExperimentOut:
    body = store.describe(exp)
    if session is not None:
        body["exposures"] = [c.__dict__ for c in store.exposure_counts(session, exp)]
    return ExperimentOut.model_validate(body)


def _spec_error(exc: SpecError) -> JSONResponse:
    status = 409 if exc.conflict else 422
    return JSONResponse(error_body(status, str(exc), [{"field": exc.field, "in": "body",
                                                       "message": exc.message}]),
                        status_code=status)


def _get(session: Any, name: str) -> Any:
    try:
        return store.get(session, name)
    except store.NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("", status_code=201, response_model=ExperimentOut, responses=error_responses(409))
def create(body: ExperimentSpec, _: AdminUser, session: SessionDep,
           settings: SettingsDep) -> Any:
    """Create a draft experiment (aliases checked against the model registry)."""
    try:
        exp = store.create(session, body, store.registry_aliases(settings))
    except SpecError as exc:
        return _spec_error(exc)
    session.commit()
    return _out(exp)


@router.get("", response_model=ExperimentList)
def list_all(_: AdminUser, session: SessionDep,
             status: Annotated[Status | None, Query()] = None) -> Any:
    """Every experiment (or those of one status), oldest first."""
    return ExperimentList(experiments=[_out(e) for e in store.list_experiments(session, status)])


@router.get("/{name}", response_model=ExperimentOut, responses=error_responses(404))
def show(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """One experiment with its users and pages per arm so far."""
    return _out(_get(session, name), session)


TRANSITION_ERRORS = error_responses(404, 409)  # no such experiment; not in a state to move


def _transition(session: Any, name: str, action: str) -> Any:
    _get(session, name)
    try:
        exp = getattr(store, action)(session, name)
    except SpecError as exc:
        return _spec_error(exc)
    session.commit()
    return _out(exp, session)


@router.post("/{name}/start", response_model=ExperimentOut, responses=TRANSITION_ERRORS)
def start(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """Start a draft: users are assigned within the API's refresh interval."""
    return _transition(session, name, "start")


@router.post("/{name}/stop", response_model=ExperimentOut, responses=TRANSITION_ERRORS)
def stop(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """Stop a running experiment; its exposures stay for the analysis."""
    return _transition(session, name, "stop")
