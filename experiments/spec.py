"""An experiment's definition as the CLI (YAML/JSON) and the admin API take it, validated.

Everything checkable without the database or the model registry is checked here, and every
error names its field (``variants.1.weight``): names, traffic split summing to 100 %, metric
names from :mod:`experiments.catalog`, quota sources and score tasks, bounds on every number.
Aliases and layer overlaps need the registry and the database: :mod:`experiments.store`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiments.catalog import (
    DEFAULT_GUARDRAILS,
    DEFAULT_PRIMARY,
    DEFAULT_SECONDARY,
    METRICS,
    QUOTA_SOURCES,
    score_tasks,
)

NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
ALIAS = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
BASIS_POINTS = 10_000  # traffic is split in 0.01 % steps
Percent = Annotated[float, Field(ge=0, le=100)]


class SpecError(ValueError):
    """A definition that cannot be accepted; ``field`` names the offending input."""

    def __init__(self, field: str, message: str, conflict: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.conflict = field, message, conflict


def _basis_points(pct: float) -> int:
    return round(pct * BASIS_POINTS / 100)


class VariantSpec(BaseModel):
    """One arm. Unset parameters are production's (champion aliases, configured quotas)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    weight: float = Field(gt=0, le=100, description="Percent of the experiment's users.")
    ranker_alias: str | None = Field(default=None, pattern=ALIAS)
    retrieval_alias: str | None = Field(default=None, pattern=ALIAS)
    quotas: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        default=None, description="Share of the ranked candidates per source.")
    explore_slots: float | None = Field(default=None, ge=0, le=1)
    score_weights: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, description="Ranker task weights of the final score.")

    @field_validator("quotas")
    @classmethod
    def _known_sources(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            if unknown := set(v) - QUOTA_SOURCES:
                raise ValueError(f"unknown source(s) {sorted(unknown)}; known: "
                                 f"{sorted(QUOTA_SOURCES)}")
            if not sum(v.values()) > 0:
                raise ValueError("at least one source needs a share above 0")
        return v

    @field_validator("score_weights")
    @classmethod
    def _known_tasks(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (unknown := set(v) - score_tasks()):
            raise ValueError(f"unknown task(s) {sorted(unknown)}; known: "
                             f"{sorted(score_tasks())}")
        return v

    def params(self) -> dict:
        """The pipeline parameters this arm sets (stored as the variant's ``params``)."""
        return {k: v for k in ("quotas", "explore_slots", "score_weights")
                if (v := getattr(self, k)) is not None}


class Population(BaseModel):
    """Who may enter: users of these regions (None: everyone)."""

    model_config = ConfigDict(extra="forbid")

    regions: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(
        default=None, min_length=1, max_length=100)


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    hypothesis: str = Field(default="", max_length=4000)
    layer: str = Field(default="default", pattern=NAME,
                       description="Experiments of one layer never share a user.")
    traffic: Percent = Field(default=100.0, gt=0, description="Percent of the layer's users.")
    holdout: Percent = Field(default=0.0, lt=100,
                             description="Percent of the entering users kept on production.")
    population: Population = Field(default_factory=Population)
    variants: list[VariantSpec] = Field(min_length=2, max_length=10)
    primary_metric: str = DEFAULT_PRIMARY
    secondary_metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_SECONDARY),
                                         max_length=len(METRICS))
    guardrail_metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_GUARDRAILS),
                                         max_length=len(METRICS))

    @field_validator("variants")
    @classmethod
    def _split(cls, v: list[VariantSpec]) -> list[VariantSpec]:
        names = [x.name for x in v]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        total = sum(_basis_points(x.weight) for x in v)
        if total != BASIS_POINTS:
            raise ValueError(f"weights sum to {total / 100:g} %, not 100 %")
        return v

    @field_validator("primary_metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {sorted(METRICS)}")
        return v

    @field_validator("secondary_metrics", "guardrail_metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if unknown := [m for m in v if m not in METRICS]:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        return list(dict.fromkeys(v))

    @property
    def control(self) -> str:
        """The first variant is the control every other is compared with."""
        return self.variants[0].name


def parse_spec(data: object) -> ExperimentSpec:
    """Validate a loaded YAML/JSON document; :class:`SpecError` naming the first bad field."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise SpecError(field, first["msg"]) from None
