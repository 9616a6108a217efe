"""``reelrank experiment create|start|stop|list|show|analyze``.

``create`` takes a YAML or JSON file (the :class:`~experiments.spec.ExperimentSpec` fields)
or options; ``--variant`` is ``NAME=WEIGHT`` plus ``,ranker=ALIAS``, ``,retrieval=ALIAS``,
``,explore=SHARE``, ``,quota.SOURCE=SHARE``, ``,weight.TASK=W`` (the first variant is the
control)::

    reelrank experiment create --name ranker-v2 --hypothesis "..." \\
        --variant control=50 --variant treatment=50,ranker=challenger
    reelrank experiment start ranker-v2
    reelrank experiment analyze ranker-v2      # table; HTML report; MLflow artifacts

Every bad input exits 2 with ``error: FIELD: reason``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from core.config import get_settings
from experiments.models import Status
from experiments.spec import SpecError, parse_spec


def _sessions():  # noqa: ANN202 - a sessionmaker
    from platform_services.storage.db import make_engine, session_factory

    return session_factory(make_engine(get_settings().database_url))


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def parse_variant(text: str) -> dict[str, Any]:
    """``treatment=50,ranker=challenger,quota.ann=0.6`` -> a variant dict for the spec."""
    head, *rest = text.split(",")
    name, sep, weight = head.partition("=")
    if not sep:
        raise SpecError("--variant", f"expected NAME=WEIGHT[,key=value...], got {text!r}")
    out: dict[str, Any] = {"name": name.strip(), "weight": weight.strip()}
    for part in rest:
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep:
            raise SpecError("--variant", f"expected key=value, got {part!r} in {text!r}")
        if key in ("ranker", "retrieval"):
            out[f"{key}_alias"] = value
        elif key == "explore":
            out["explore_slots"] = value
        elif key.startswith(("quota.", "weight.")):
            group = "quotas" if key.startswith("quota.") else "score_weights"
            out.setdefault(group, {})[key.partition(".")[2]] = value
        else:
            raise SpecError("--variant", f"unknown key {key!r} (ranker, retrieval, explore, "
                            "quota.SOURCE, weight.TASK)")
    return out


def create(
    file: Annotated[Path | None, typer.Argument(help="YAML or JSON definition.")] = None,
    name: Annotated[str | None, typer.Option(help="Experiment name.")] = None,
    hypothesis: Annotated[str | None, typer.Option()] = None,
    variant: Annotated[list[str] | None, typer.Option(
        help="NAME=WEIGHT[,ranker=A][,retrieval=A][,explore=S][,quota.SRC=S][,weight.TASK=W]; "
             "repeat; the first is control.")] = None,
    layer: Annotated[str | None, typer.Option()] = None,
    traffic: Annotated[float | None, typer.Option(help="Percent of the layer.")] = None,
    holdout: Annotated[float | None, typer.Option(help="Percent kept on production.")] = None,
    primary: Annotated[str | None, typer.Option(help="Primary metric.")] = None,
    region: Annotated[list[str] | None, typer.Option(help="Target region; repeat.")] = None,
) -> None:
    """Create a draft experiment from FILE and/or options (options win)."""
    from experiments import store

    try:
        data: dict[str, Any] = {}
        if file is not None:
            try:
                data = yaml.safe_load(file.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise SpecError("file", f"{file}: {exc}") from None
            if not isinstance(data, dict):
                raise SpecError("file", f"{file}: expected a mapping of fields")
        options = {"name": name, "hypothesis": hypothesis, "layer": layer, "traffic": traffic,
                   "holdout": holdout, "primary_metric": primary}
        data |= {k: v for k, v in options.items() if v is not None}
        if variant:
            data["variants"] = [parse_variant(v) for v in variant]
        if region:
            data["population"] = {"regions": region}
        spec = parse_spec(data)
        sessions = _sessions()
        with sessions.begin() as session:
            exp = store.create(session, spec, store.registry_aliases(get_settings()))
            typer.echo(f"created {exp.name} (draft, layer {exp.layer}, "
                       f"{len(exp.variants)} variants)")
    except SpecError as exc:
        raise _fail(str(exc)) from None


def _transition(name: str, action: str) -> None:
    from experiments import store

    try:
        with _sessions().begin() as session:
            exp = getattr(store, action)(session, name)
            typer.echo(f"{exp.name}: {exp.status}" + (
                f" (layer {exp.layer}, buckets {exp.bucket_lo}-{exp.bucket_hi})"
                if action == "start" else ""))
    except (SpecError, store.NotFound) as exc:
        raise _fail(str(exc)) from None


def start(name: str) -> None:
    """Start assigning users to a draft experiment."""
    _transition(name, "start")


def stop(name: str) -> None:
    """Stop a running experiment (its logged exposures stay)."""
    _transition(name, "stop")


def list_(status: Annotated[Status | None, typer.Option(help="Only this status.")] = None,
          ) -> None:
    """List experiments."""
    from experiments import store

    with _sessions()() as session:
        found = store.list_experiments(session, status)
        for exp in found:
            split = "/".join(f"{v.name}:{v.weight_pct:g}" for v in exp.variants)
            typer.echo(f"{exp.name:<32}{exp.status:<9}{exp.layer:<16}{split}")
    if not found:  # say so, and how to get one, rather than print nothing
        which = f"{status.value} experiments" if status else "experiments"
        typer.echo(f"no {which}: `reelrank experiment create` defines one; `reelrank "
                   "experiment simulate --preset two-tower-vs-popularity` runs a ready one",
                   err=True)


def show(name: str) -> None:
    """An experiment's definition, state and exposures so far (JSON)."""
    from experiments import store

    with _sessions()() as session:
        try:
            exp = store.get(session, name)
        except store.NotFound as exc:
            raise _fail(str(exc)) from None
        out = store.describe(exp) | {"exposures": [
            c.__dict__ for c in store.exposure_counts(session, exp)]}
    typer.echo(json.dumps(out, indent=2, default=str))


def analyze(
    name: str,
    out: Annotated[Path | None, typer.Option(help="Report folder (default var/reports).")] = None,
    mlflow: Annotated[bool, typer.Option(help="Log the report to MLflow.")] = True,
    resamples: Annotated[int, typer.Option(min=100, max=10_000,
                                           help="Bootstrap resamples.")] = 500,
) -> None:
    """Print the results table, write the HTML report and log it to the experiment's run."""
    from experiments import report, store
    from experiments.analysis import analyze as run_analysis

    settings = get_settings()
    sessions = _sessions()
    with sessions() as session:
        try:
            result = run_analysis(session, name, resamples=resamples)
        except store.NotFound as exc:
            raise _fail(str(exc)) from None
    typer.echo(report.text_table(result))
    path = report.write(result, out or settings.path("reports", "x").parent)
    typer.echo(f"\nreport: {path}")
    if mlflow:
        with sessions.begin() as session:
            exp = store.get(session, name)
            exp.mlflow_run_id = report.log_to_mlflow(settings, result, path, exp.mlflow_run_id)
            typer.echo(f"MLflow run {exp.mlflow_run_id} (experiment {report.MLFLOW_EXPERIMENT})")


def register(groups: dict[str, typer.Typer]) -> None:
    group = groups["experiment"]
    for fn in (create, start, stop, show, analyze):
        group.command()(fn)
    group.command("list")(list_)
