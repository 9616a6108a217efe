"""Finished fits of the retrieval benchmark, kept so that an interrupted run resumes.

The benchmark tunes every model on validation with dozens of fits (a KuaiRand two-tower fit
alone takes minutes on 2 cores), which together outlast a working session. Each finished
tuning fit and each refit of a later seed is appended here as one JSON line; a rerun of the
same command reads them back instead of fitting again. An entry only matches when everything
its result depends on is the same: the data and fold sizes, the benchmark settings, the
candidate, its parameters, and the source of the code that trains and evaluates (a code
change starts over). The first seed's refit is never read back: the report needs its model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

# What every fit's result depends on, besides its data and parameters: the retrieval package
# (but this module, which only says what matches, and the two-tower's own modules), the data
# set readers and the content encoders; not the ranker, the platform, or the world loader.
TWO_TOWER_CODE = ("training/retrieval/towers.py", "training/retrieval/trainer.py",
                  "training/retrieval/bundle.py", "models/two_tower.py", "models/content.py",
                  "models/embeddings.py")
CODE = ("training/retrieval", "training/datasets/kuairand.py", "training/datasets/microlens.py",
        "training/datasets/store.py", "training/datasets/raw.py", "training/content.py",
        "core/dataset_schema.py")
ROOT = Path(__file__).resolve().parents[2]


def code_fingerprint(paths: tuple[str, ...] = CODE, skip: tuple[str, ...] = TWO_TOWER_CODE
                     ) -> str:
    """A hash of the Python sources under ``paths`` (relative to the repository root), but
    this module and ``skip``."""
    digest = hashlib.sha256()
    skipped = {Path(__file__).resolve(), *(ROOT / rel for rel in skip)}
    for rel in paths:
        path = ROOT / rel
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file in skipped:
                continue
            digest.update(file.relative_to(ROOT).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class FitCheckpoint:
    """``get(...)`` / ``put(...)`` of one fit's record under ``scope`` (everything the
    results depend on that the key does not name: data, settings, code). ``code``: the
    sources only this candidate's fits depend on (:data:`TWO_TOWER_CODE`: the two-tower's
    model and trainer), so a change there keeps the baselines' fits."""

    def __init__(self, path: Path, scope: dict[str, Any]) -> None:
        self.path, self.reused = path, 0
        self.scope = json.dumps({**scope, "code": code_fingerprint()}, sort_keys=True)
        # Hashed now, with the code this process runs: an edit during a run (hours long) must
        # not label the fits of the code in memory as the edited code's.
        self.own = {TWO_TOWER_CODE: code_fingerprint(TWO_TOWER_CODE, skip=())}
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                self.entries[entry["key"]] = entry["record"]

    def _key(self, phase: str, name: str, section: str, params: dict[str, Any],
             code: tuple[str, ...]) -> str:
        own = self.own[code] if code else None
        text = json.dumps([self.scope, phase, name, section, params, own], sort_keys=True,
                          default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, phase: str, name: str, section: str, params: dict[str, Any],
            code: tuple[str, ...] = ()) -> dict[str, Any] | None:
        record = self.entries.get(self._key(phase, name, section, params, code))
        if record is not None:
            self.reused += 1
        return record

    def put(self, phase: str, name: str, section: str, params: dict[str, Any],
            record: dict[str, Any], code: tuple[str, ...] = ()) -> None:
        key = self._key(phase, name, section, params, code)
        self.entries[key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "record": record}, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
