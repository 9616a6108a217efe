"""MLflow helpers shared by every trainer: experiment setup, metric names, registry, URIs.

Each model family keeps its own experiment and registered model name (``reelrank-retrieval``,
``reelrank-ranker``); what they share is here: artifacts under ``<var>/mlartifacts/<experiment>``,
MLflow-safe metric keys, registration that gives the first version of a model the
``champion`` alias (so a fresh setup works end to end), and resolving
``models:/NAME@ALIAS``, ``models:/NAME/3`` or ``models:/NAME/latest`` to a registry version.
"""

from __future__ import annotations

import re

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.config import get_settings

FIRST_ALIAS = "champion"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelNotFound(LookupError):
    """A model URI that does not resolve; the message is one line."""


def configure(experiment: str) -> None:
    """Point MLflow at the settings' tracking URI and make ``experiment`` the active one."""
    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = settings.path("mlartifacts", experiment).resolve()
        mlflow.create_experiment(experiment, artifact_location=location.as_uri())
    mlflow.set_experiment(experiment)


def metric_key(name: str) -> str:
    """MLflow metric names allow no '@': recall@50 -> recall_at_50."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({prefix + metric_key(k): float(v) for k, v in metrics.items()}, step=step)


def register(model_uri: str, name: str, run_id: str, alias: str | None = None) -> ModelVersion:
    """A new version of ``name``; ``alias`` (or champion, for the first) points at it."""
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id})
    if alias is None and not client.get_registered_model(name).aliases:
        alias = FIRST_ALIAS
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def resolve(uri: str) -> ModelVersion:
    """The registry version behind ``models:/name@alias``, ``models:/name/3`` or ``/latest``."""
    m = _URI.match(uri)
    if not m:
        raise ModelNotFound(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient()
    try:
        if m["alias"]:
            return client.get_model_version_by_alias(m["name"], m["alias"])
        if m["version"] == "latest":
            versions = client.search_model_versions(f"name = '{m['name']}'")
            if not versions:
                raise ModelNotFound(f"{uri}: registered model {m['name']!r} has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(m["name"], m["version"])
    except MlflowException as exc:
        raise ModelNotFound(f"{uri}: {str(exc).splitlines()[0]}") from None
