"""Admin API of A/B experiments: ``/api/v1/experiments`` (the ``admin`` role only).

Create takes the same definition as ``reelrank experiment create``; a bad one is a 422 whose
``fields`` name the input (``variants.1.weight``), one clashing with a running experiment or an
existing name a 409 that names it too. Start/stop return the new state; stopping keeps every
logged exposure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from experiments import store
from experiments.models import Status
from experiments.spec import ExperimentSpec, SpecError
from serving.deps import AdminUser, SessionDep, SettingsDep
from serving.errors import error_body

router = APIRouter(prefix="/experiments", tags=["experiments"])
MAX_BODY_BYTES = 64 * 1024
Name = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class ErrorOut(BaseModel):
    error: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No or an invalid bearer token."},
    403: {"model": ErrorOut, "description": "The token lacks the admin role."},
    404: {"model": ErrorOut, "description": "No experiment of that name."},
    409: {"model": ErrorOut, "description": "Clashes with another experiment or its state."},
    413: {"model": ErrorOut, "description": "Body over 64 KiB."},
    422: {"model": ErrorOut, "description": "Invalid definition; ``fields`` name the input."},
}


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


async def _small_body(request: Request) -> None:
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
        raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")


@router.post("", status_code=201, response_model=ExperimentOut, responses=ERRORS,
             dependencies=[Depends(_small_body)])
def create(body: ExperimentSpec, _: AdminUser, session: SessionDep,
           settings: SettingsDep) -> Any:
    """Create a draft experiment (aliases checked against the model registry)."""
    try:
        exp = store.create(session, body, store.registry_aliases(settings))
    except SpecError as exc:
        return _spec_error(exc)
    session.commit()
    return _out(exp)


@router.get("", response_model=ExperimentList, responses=ERRORS)
def list_all(_: AdminUser, session: SessionDep,
             status: Annotated[Status | None, Query()] = None) -> Any:
    """Every experiment (or those of one status), oldest first."""
    return ExperimentList(experiments=[_out(e) for e in store.list_experiments(session, status)])


@router.get("/{name}", response_model=ExperimentOut, responses=ERRORS)
def show(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """One experiment with its users and pages per arm so far."""
    return _out(_get(session, name), session)


def _transition(session: Any, name: str, action: str) -> Any:
    _get(session, name)
    try:
        exp = getattr(store, action)(session, name)
    except SpecError as exc:
        return _spec_error(exc)
    session.commit()
    return _out(exp, session)


@router.post("/{name}/start", response_model=ExperimentOut, responses=ERRORS)
def start(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """Start a draft: users are assigned within the API's refresh interval."""
    return _transition(session, name, "start")


@router.post("/{name}/stop", response_model=ExperimentOut, responses=ERRORS)
def stop(name: Name, _: AdminUser, session: SessionDep) -> Any:
    """Stop a running experiment; its exposures stay for the analysis."""
    return _transition(session, name, "stop")
