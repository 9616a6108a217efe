"""What a registered model version says about where it came from: the tags every trainer puts
on its version, and which offline metric the pre-deploy gate compares per model family.

A version is only comparable with another if both were evaluated on the same data and split:
``dataset_fingerprint`` hashes the data set's files (a stored data set's ``meta.json`` without
its ``created_at``, so re-importing identical data keeps the fingerprint) and ``eval_split``
names the split (protocol and end of training). ``code_version`` is the git commit the model
was trained from (``+dirty`` with uncommitted changes), else the installed package version.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

import pandas as pd

# Registered model -> the run metric the deploy gate compares (higher is better for each):
# the retriever is tuned on Recall@50, the ranker's main task is the click.
PRIMARY_METRICS = {
    "reelrank-retrieval": "test_recall_at_50",
    "reelrank-ranker": "test_ranker_click_auc",
}
TAG_FINGERPRINT = "dataset_fingerprint"
TAG_SPLIT = "eval_split"
TAG_FEATURES = "features"
TAG_CODE = "code_version"
TAG_PRIMARY = "primary_metric"
TAG_EVAL_TABLE = "eval_table"
_CHUNK = 1 << 20


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    if path.name == "meta.json":  # a stored data set: everything but when it was written
        meta = json.loads(path.read_text())
        meta.pop("created_at", None)
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        return
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def dataset_fingerprint(path: Path) -> str:
    """SHA-256 over the data set's files (names relative to ``path``, then contents), so the
    same data gives the same fingerprint wherever it lies; a file or a directory."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0")
        _hash_file(digest, f)
    return digest.hexdigest()


def code_version() -> str:
    """The git commit of this checkout (``+dirty`` when it has uncommitted changes), else the
    installed ``reelrank`` version (``pkg:0.1.0``), else ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], text=True,
                                capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], text=True, capture_output=True,
                               timeout=10, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"pkg:{metadata.version('reelrank')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def version_tags(model_name: str, data: Path, split: str, features: Iterable[str],
                 metrics: Mapping[str, float], run_id: str) -> dict[str, str]:
    """The lineage tags of a new version of ``model_name``; ``metrics`` are the run's logged
    (MLflow-keyed) metrics, of which the family's primary one is copied onto the version."""
    tags = {
        TAG_FINGERPRINT: dataset_fingerprint(data),
        TAG_SPLIT: split,
        TAG_FEATURES: ",".join(features),
        TAG_CODE: code_version(),
        TAG_EVAL_TABLE: f"runs:/{run_id}/eval/eval_table.json",
    }
    primary = PRIMARY_METRICS.get(model_name)
    if primary is not None:
        tags[TAG_PRIMARY] = primary
        if primary in metrics:
            tags[f"metric.{primary}"] = f"{float(metrics[primary]):.6g}"
    return tags


def eval_description(table: pd.DataFrame) -> str:
    """The evaluation table as markdown: the version's description in the registry UI."""
    if table.empty:
        return "No test split: trained on the whole log."
    return ("Offline evaluation (test split):\n\n```\n" + table.round(4).to_string(index=False)
            + "\n```")
