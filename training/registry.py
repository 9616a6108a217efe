"""The model registry (MLflow): the one module that talks to the tracking server about models.

Every trainer, CLI and serving process goes through here to point MLflow at the settings'
tracking URI (:func:`connect`, :func:`configure`), log metrics under MLflow-safe keys, register
a version (the first version of a model gets the ``champion`` alias, so a fresh setup works end
to end), resolve ``models:/NAME@ALIAS``, ``models:/NAME/3`` or ``models:/NAME/latest`` to a
registry version, and move an alias (``reelrank deploy``), remembering each alias's earlier
versions for a rollback (:func:`set_alias`).

A registered model is a pyfunc whose one artifact is a *bundle* directory (the weights and
everything needed to use them). Each model family says only what its bundle is: a class with
``save(dir)`` / ``load(dir)``, and a :class:`BundlePyfunc` subclass with its ``predict``
(:mod:`training.ranker.bundle`, :mod:`training.retrieval.bundle`); :func:`log_bundle` and
:func:`load_bundle` do the rest. Artifacts go under ``<var>/mlartifacts/<experiment>``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from core.config import Settings

FIRST_ALIAS = "champion"
HISTORY_MAX = 50  # versions remembered per alias
# Registered model names by the short names the CLI takes (``--model ranker``).
MODELS = {"ranker": "reelrank-ranker", "retrieval": "reelrank-retrieval"}
PIP = ["torch==2.14.1", "numpy", "pandas", "pyarrow", "mlflow==3.17.2"]
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelNotFound(LookupError):
    """A model URI that does not resolve; the message is one line."""


def connect(tracking_uri: str) -> None:
    """Point this process's MLflow at ``tracking_uri`` (the settings' ``mlflow_tracking_uri``)."""
    mlflow.set_tracking_uri(tracking_uri)


def configure(settings: Settings, experiment: str) -> None:
    """:func:`connect`, and make ``experiment`` the active one (created on first use)."""
    connect(settings.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = settings.path("mlartifacts", experiment).resolve()
        mlflow.create_experiment(experiment, artifact_location=location.as_uri())
    mlflow.set_experiment(experiment)


def metric_key(name: str) -> str:
    """MLflow metric names allow no '@': recall@50 -> recall_at_50."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({prefix + metric_key(k): float(v) for k, v in metrics.items()}, step=step)


def register(model_uri: str, name: str, run_id: str, alias: str | None = None,
             tags: dict[str, str] | None = None, description: str | None = None) -> ModelVersion:
    """A new version of ``name`` with ``tags`` (its lineage, :mod:`training.lineage`) and
    ``description``; ``alias`` (or champion, for the first) points at it."""
    client = MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id, **(tags or {})})
    if description:
        client.update_model_version(name, version.version, description=description)
    if alias is None and not client.get_registered_model(name).aliases:
        alias = FIRST_ALIAS
    if alias:
        set_alias(client, name, alias, str(version.version))
    return client.get_model_version(name, version.version)


def history_key(alias: str) -> str:
    """The registered-model tag holding ``alias``'s earlier versions (JSON list, oldest first,
    the current one last): what ``reelrank deploy rollback`` walks back through."""
    return f"alias_history.{alias}"


def alias_history(client: MlflowClient, name: str, alias: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(history_key(alias))
    return [str(v) for v in json.loads(raw)] if raw else []


def set_alias(client: MlflowClient, name: str, alias: str, version: str,
              record: bool = True) -> None:
    """Point ``alias`` at ``version``; with ``record``, append it to the alias's history (a
    rollback moves the alias without recording, having already trimmed the history)."""
    if record:
        history = alias_history(client, name, alias)
        current = client.get_registered_model(name).aliases.get(alias)
        if current is not None and (not history or history[-1] != str(current)):
            history.append(str(current))  # moved outside reelrank (the MLflow UI): keep it
        if not history or history[-1] != version:
            history.append(version)
        client.set_registered_model_tag(name, history_key(alias),
                                        json.dumps(history[-HISTORY_MAX:]))
    client.set_registered_model_alias(name, alias, version)


def _latest(client: MlflowClient, name: str) -> ModelVersion | None:
    return max(client.search_model_versions(f"name = '{name}'"),
               key=lambda v: int(v.version), default=None)


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
            latest = _latest(client, m["name"])
            if latest is None:
                raise ModelNotFound(f"{uri}: registered model {m['name']!r} has no versions")
            return latest
        return client.get_model_version(m["name"], m["version"])
    except MlflowException as exc:
        raise ModelNotFound(f"{uri}: {str(exc).splitlines()[0]}") from None


def version_number(client: MlflowClient, name: str, version: str) -> str:
    """``version`` of ``name`` as the registry spells it (``latest``: the newest); raises
    ``MlflowException`` for a bad name or version."""
    if version == "latest":
        latest = _latest(client, name)
        if latest is None:
            raise MlflowException(f"registered model {name!r} has no versions")
        return str(latest.version)
    return str(client.get_model_version(name, version).version)


def move_alias(model: str, alias: str, version: str = "latest") -> tuple[str, str, str | None]:
    """Point ``alias`` of ``model`` (ranker | retrieval | a registered name) at ``version``;
    returns (name, version, previous version). The tracking URI must be set (:func:`connect`).
    Raises ``MlflowException`` for a bad name or version."""
    name = MODELS.get(model, model)
    client = MlflowClient()
    version = version_number(client, name, version)
    previous = client.get_registered_model(name).aliases.get(alias)
    set_alias(client, name, alias, version)
    return name, version, None if previous is None else str(previous)


class Bundle(Protocol):
    """A trained model as one directory."""

    def save(self, path: Path) -> Path: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


B = TypeVar("B", bound=Bundle)


# The artifact key of the bundle directory in a pyfunc logged by :func:`log_bundle`, and where
# MLflow keeps it in the logged model (its layout: ``artifacts/<key>``).
BUNDLE_KEY = "bundle"
BUNDLE_PATH = f"artifacts/{BUNDLE_KEY}"


class BundlePyfunc(PythonModel):
    """A pyfunc whose artifact is a bundle directory; a subclass names the bundle class and
    writes ``predict`` against ``self.bundle``."""

    bundle_type: ClassVar[type[Bundle]]
    bundle: Any

    def load_context(self, context: Any) -> None:
        self.bundle = self.bundle_type.load(Path(context.artifacts[BUNDLE_KEY]))


def log_bundle(bundle: Bundle, model: BundlePyfunc, signature: ModelSignature,
               input_example: pd.DataFrame | None = None) -> str:
    """Log ``bundle`` as the artifact of the pyfunc ``model`` into the active run; its URI."""
    with tempfile.TemporaryDirectory() as tmp, without_inapplicable_advice():
        bundle_dir = bundle.save(Path(tmp) / BUNDLE_KEY)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=model, artifacts={BUNDLE_KEY: str(bundle_dir)},
            signature=signature, input_example=input_example, pip_requirements=PIP,
        )
    return info.model_uri


class _Drop(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def without_inapplicable_advice() -> Iterator[None]:
    """MLflow's advice that does not apply to these models, kept off the terminal (every
    training run and ``make demo`` printed it): integer columns cannot hold a missing value
    (ids are never missing; the features that may be are doubles), no input example (the
    retrieval model's input is a user id), and a pickled ``python_model`` (a loader class: the
    weights are the bundle's own files, and serving loads the bundle without unpickling the
    pyfunc, :func:`load_bundle`). Around ``infer_signature`` too, where the first is raised;
    the retrieval bundle's call is not wrapped: a change to ``training/retrieval/bundle.py``
    would change the fingerprint of every committed two-tower tuning fit
    (``training.retrieval.checkpoint``)."""
    pickled = _Drop("Passing a Python object as `python_model`")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        logging.getLogger("mlflow.pyfunc").addFilter(pickled)
        try:
            yield
        finally:
            logging.getLogger("mlflow.pyfunc").removeFilter(pickled)


def load_bundle(uri: str, bundle_type: type[B]) -> tuple[B, ModelVersion]:
    """The bundle of the version behind ``uri``; the tracking URI must be set (:func:`connect`
    or :func:`configure`).

    Only the bundle directory is fetched and read (a local artifact store hands back its own
    path): no pyfunc wrapper to unpickle, no YAML to parse, no requirement check. That was
    ~50 ms of pure Python holding the GIL on a serving replica's poller thread while the
    replica scored requests on a 60 ms budget; this is ~10 ms."""
    version = resolve(uri)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{version.name}/{version.version}/{BUNDLE_PATH}")
    try:
        bundle = bundle_type.load(Path(path))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelNotFound(f"{uri}: not a {bundle_type.__name__} bundle ({exc!r})") from None
    return bundle, version
