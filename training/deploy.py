"""``reelrank deploy``'s logic: the pre-deploy gate, the alias move and the rollback.

The gate compares the candidate version's primary offline metric
(:data:`training.lineage.PRIMARY_METRICS`) with the current champion's. It passes when there is
no champion, or the champion is the candidate, or the candidate is at most
``deploy_max_regression`` (a relative share) below it. It refuses when the two were not
evaluated on the same data and split (different ``dataset_fingerprint`` / ``eval_split`` tags:
the numbers are not comparable) or a metric is missing, and says why; ``--force`` deploys
anyway. A rollback needs no gate: it restores a version that served before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training import lineage, registry

CHAMPION = "champion"


class DeployRefused(Exception):
    """The gate refused (the message says why and how to override) or a rollback has no
    earlier version; one line."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str


def _metric(client: MlflowClient, version: ModelVersion, key: str) -> float | None:
    value = client.get_run(version.run_id).data.metrics.get(key) if version.run_id else None
    if value is None and f"metric.{key}" in version.tags:
        value = float(version.tags[f"metric.{key}"])
    return value


def check_gate(client: MlflowClient, name: str, version: str, margin: float) -> GateResult:
    """May ``version`` of ``name`` replace the champion's numbers? (see the module doc)."""
    champion_v = client.get_registered_model(name).aliases.get(CHAMPION)
    if champion_v is None:
        return GateResult(True, "no champion yet")
    if str(champion_v) == version:
        return GateResult(True, f"version {version} is the champion")
    new = client.get_model_version(name, version)
    old = client.get_model_version(name, str(champion_v))
    for tag, what in ((lineage.TAG_FINGERPRINT, "data set"), (lineage.TAG_SPLIT, "split")):
        a, b = new.tags.get(tag), old.tags.get(tag)
        if a is None or b is None or a != b:
            return GateResult(False, (
                f"version {version} and champion v{champion_v} were not evaluated on the same "
                f"{what} ({tag} {_short(a)} vs {_short(b)}): their metrics are not comparable"))
    key = new.tags.get(lineage.TAG_PRIMARY) or lineage.PRIMARY_METRICS.get(name)
    if key is None:
        return GateResult(False, f"{name} has no primary metric to compare")
    got, best = _metric(client, new, key), _metric(client, old, key)
    if got is None or best is None:
        missing = version if got is None else f"champion v{champion_v}"
        return GateResult(False, f"{key} is not logged for {missing}")
    floor = best * (1 - margin) if best >= 0 else best * (1 + margin)
    verdict = (f"{key} {got:.4f} vs champion v{champion_v} {best:.4f} "
               f"({(got - best) / abs(best) if best else 0.0:+.1%}; allowed -{margin:.1%})")
    return GateResult(got >= floor, verdict)


def _short(value: str | None) -> str:
    return "missing" if value is None else value[:12]


def deploy(model: str, alias: str, version: str, margin: float,
           force: bool = False) -> tuple[str, str, str | None, GateResult]:
    """Gate, then move ``alias`` of ``model`` to ``version``; returns (registered name,
    version, previous version of the alias, gate result). :class:`DeployRefused` when the
    gate refuses without ``force``; ``MlflowException`` for a bad model or version."""
    name = registry.MODELS.get(model, model)
    client = MlflowClient()
    version = registry.version_number(client, name, version)
    gate = check_gate(client, name, version, margin)
    if not gate.passed and not force:
        raise DeployRefused(f"gate refused {name} v{version} as {alias}: {gate.reason} "
                            "(--force deploys anyway)")
    name, version, before = registry.move_alias(name, alias, version)
    return name, version, before, gate


def rollback(model: str, alias: str = CHAMPION) -> tuple[str, str, str]:
    """Point ``alias`` back at the version it pointed at before the current one; returns
    (registered name, restored version, version moved away from)."""
    name = registry.MODELS.get(model, model)
    client = MlflowClient()
    try:
        current = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as exc:
        raise DeployRefused(str(exc).splitlines()[0]) from None
    if current is None:
        raise DeployRefused(f"{name} has no alias {alias!r}")
    history = registry.alias_history(client, name, alias)
    if not history or history[-1] != str(current):
        history.append(str(current))
    if len(history) < 2:
        raise DeployRefused(f"{name}@{alias} has no earlier version to roll back to")
    moved_from, target = history.pop(), history[-1]
    client.set_registered_model_tag(name, registry.history_key(alias), json.dumps(history))
    registry.set_alias(client, name, alias, target, record=False)
    return name, target, moved_from
