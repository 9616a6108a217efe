"""Finished fits of the retrieval benchmark, kept so that an interrupted run resumes.

The benchmark tunes every model on validation with dozens of fits (a KuaiRand two-tower fit
alone takes minutes on 2 cores), which together outlast a working session. Each finished
tuning fit and each refit of a later seed is appended as one JSON line; a rerun of the
same command reads them back instead of fitting again. An entry only matches when everything
its result depends on is the same: the data and fold sizes, the benchmark settings, the
candidate, its parameters, and the source of the code that trains and evaluates (a code
change starts over). The first seed's refit is never read back: the report needs its model.

Two files. The refits carry every test user's metrics (for the bootstrap intervals), which
outgrew what belongs in the repository: they go to gzip (one member per fit, so an append
never rewrites it) under the ignored ``var/`` (``reelrank bench retrieval --checkpoint``).
The tuning fits are a few numbers each and are most of the hours: they go to a plain JSON
lines file in the repository (``--tuning-fits``), so a run too long for one working session
resumes from a fresh clone of what was committed, not only on the machine that ran it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

# What every fit's result depends on, besides its data and parameters: the retrieval package
# (but this module, which only says what matches, and the two-tower's own modules), the data
# set readers and the content encoders; not the ranker, the platform, or the world loader.
TWO_TOWER_CODE = ("training/retrieval/towers.py", "training/retrieval/trainer.py",
                  "training/retrieval/bundle.py", "models/two_tower.py", "models/content.py",
                  "models/embeddings.py")
# The two-tower with an interest per history item (the cold-item section): its own fits only.
ITEM2ITEM_CODE = ("training/retrieval/item2item.py", "models/item_tower.py")
# A version of a candidate's own sources whose fits are an earlier version's, bit for bit: a
# change that adds an option, off unless a setting names it, leaves every setting fitted before
# computing as it did. Each pair is checked before it is added (the same fits on the synthetic
# world from both versions, hashed) and holds only for exactly these sources: once they change
# again the entry matches nothing and goes.
SAME_FITS = {
    # TWO_TOWER_CODE: + TwoTowerConfig.item_oov, and the item_oov axis in every search
    "06a02dd073c08d86": "9240c3dc301c57e4",
}
# Axes a search gained after fits were made, each with the value every earlier fit had: a
# setting at that value is keyed as it was before the axis existed, so the search resumes
# from those fits and only the new values are fitted.
ADDED_AXES = {"item_oov": True}
CODE = ("training/retrieval", "training/datasets/kuairand.py", "training/datasets/microlens.py",
        "training/datasets/store.py", "training/datasets/raw.py", "training/content.py",
        "core/dataset_schema.py")
ROOT = Path(__file__).resolve().parents[2]


def code_fingerprint(paths: tuple[str, ...] = CODE,
                     skip: tuple[str, ...] = TWO_TOWER_CODE + ITEM2ITEM_CODE) -> str:
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

    def __init__(self, path: Path, scope: dict[str, Any], tuning: Path | None = None) -> None:
        """``tuning``: where the tuning fits go (``path`` too when None)."""
        self.path, self.tuning, self.reused = path, tuning or path, 0
        self.scope = json.dumps({**scope, "code": code_fingerprint()}, sort_keys=True)
        # Hashed now, with the code this process runs: an edit during a run (hours long) must
        # not label the fits of the code in memory as the edited code's.
        own = {code: code_fingerprint(code, skip=()) for code in (TWO_TOWER_CODE,
                                                                   ITEM2ITEM_CODE)}
        self.own = {code: SAME_FITS.get(fp, fp) for code, fp in own.items()}
        self.entries: dict[str, dict[str, Any]] = {}
        for entry in [*_read(self.tuning), *(_read(path) if self.tuning != path else [])]:
            self.entries[entry["key"]] = entry["record"]

    def _key(self, phase: str, name: str, section: str, params: dict[str, Any],
             code: tuple[str, ...]) -> str:
        own = self.own[code] if code else None
        params = {k: v for k, v in params.items() if (k, v) not in ADDED_AXES.items()}
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
        path = self.tuning if phase == "tune" else self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = path.suffix != ".gz" and path.is_file() and _ends_short(path)
        with _open(path, "at") as f:
            line = json.dumps({"key": key, "record": record}, default=_plain)
            f.write(("\n" if cut else "") + line + "\n")


def _ends_short(path: Path) -> bool:
    """Whether the text file's last line was cut short (no newline at its end)."""
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def _open(path: Path, mode: str) -> IO[str]:
    """gzip for a ``.gz`` name, plain text otherwise."""
    if path.suffix == ".gz":
        return gzip.open(path, mode)  # type: ignore[return-value]
    return path.open(mode.replace("t", ""))


def _read(path: Path) -> list[dict[str, Any]]:
    """The entries in ``path``, but a last one the interruption cut short."""
    if not path.is_file():
        return []
    lines: list[str] = []
    try:
        with _open(path, "rt") as f:
            lines.extend(f)
    except (EOFError, gzip.BadGzipFile, zlib.error):  # a member cut short: keep what came before
        pass
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short
            continue
    return entries


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
