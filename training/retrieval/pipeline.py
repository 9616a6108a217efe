"""Data in, tuned and refitted models out: the loop shared by the CLI and the benchmark.

Every candidate (the two-tower or a baseline) is fitted on the tuning fold once per grid point,
scored on validation with the one evaluation function, and the best setting (by Recall@50) is
refitted on the final fold's training data and evaluated on its test data. The two-tower's
"setting" includes its early-stopped epoch count, so the refit trains exactly that long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np
import pandas as pd
import torch

from core.dataset_schema import DataError, validate
from training.content import content_matrix
from training.datasets import kuairand, microlens
from training.datasets.store import Dataset, load_dataset
from training.retrieval import DATASET_KINDS
from training.retrieval.checkpoint import FitCheckpoint
from training.retrieval.data import Fold, Protocol, cold_items, leave_last_out, temporal, timeline
from training.retrieval.inputs import IdSpace, TrainData, build_id_space, encode
from training.retrieval.metrics import evaluate
from training.retrieval.search import SearchResult, SearchSpace, search, select

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "kuairand": kuairand.load,
    "microlens": microlens.load,
}
# KuaiRand's days are Beijing days: "train on 04-25..04-28" ends at 04-29 00:00 UTC+8.
TIMEZONES = {"kuairand": "Asia/Shanghai"}
PROTOCOLS = ("auto", "temporal", "leave-last-out", "cold-item")
TUNE_METRIC = "recall@50"


class Recommender(TypingProtocol):
    name: str

    def fit(self, data: TrainData, valid: Fold | None = None) -> None: ...

    def score(self, users: np.ndarray) -> np.ndarray | torch.Tensor: ...


def load_data(kind: str, path: Path) -> Dataset:
    """A stored data set directory, or a raw KuaiRand / MicroLens directory read through its
    adapter; anything else is a :class:`DataError` with one line."""
    if kind not in DATASET_KINDS:
        raise DataError(f"unknown dataset kind {kind!r} (use {'|'.join(DATASET_KINDS)})")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if (path / "meta.json").is_file():
        return load_dataset(path)
    if kind not in ADAPTERS:
        raise DataError(f"{path}: not a data set directory (no meta.json); "
                        f"create one with `reelrank data {kind}`")
    tables = {n: validate(n, t, f"{kind} {path}").to_pandas()
              for n, t in ADAPTERS[kind](path).items() if t is not None}
    return Dataset(name=kind, path=path, meta={"source": f"{kind} {path}"}, **tables)


def parse_day(value: str, kind: str) -> pd.Timestamp:
    """A date or datetime; without a zone it is read in the data set's zone (KuaiRand: UTC+8)."""
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise DataError(f"--train-end: not a date: {value!r}") from None
    if ts.tzinfo is None:
        ts = ts.tz_localize(TIMEZONES.get(kind, "UTC"))
    return ts.tz_convert("UTC")


def make_protocol(kind: str, rows: pd.DataFrame, train_end: str | None = None,
                  protocol: str = "auto", seed: int = 0, cold_fraction: float = 0.2) -> Protocol:
    """Temporal when the data has a clock (default cut: the last two local days are the test),
    leave-last-out when it has none; ``cold-item`` on request."""
    timed = rows["ts"].notna().any()
    if protocol == "auto":
        protocol = "temporal" if timed else "leave-last-out"
    if protocol == "cold-item":
        return cold_items(rows, cold_fraction, seed)
    if protocol == "leave-last-out":
        if train_end:
            raise DataError("--train-end needs a temporal split; leave-last-out has no dates")
        return leave_last_out(rows)
    if protocol != "temporal":
        raise DataError(f"unknown protocol {protocol!r} (use {'|'.join(PROTOCOLS)})")
    if not timed:
        raise DataError(f"{kind}: interactions have no timestamps; use leave-last-out")
    if train_end:
        end = parse_day(train_end, kind)
    else:
        tz = TIMEZONES.get(kind, "UTC")
        last = pd.Timestamp(np.nanmax(rows["ts"].to_numpy()) * 1e6, tz="UTC").tz_convert(tz)
        end = (last.normalize() - pd.Timedelta(days=1)).tz_convert("UTC")
    return temporal(rows, end)


@dataclass
class Prepared:
    """A data set ready for every candidate: id space, protocol, encoded folds (shared caches)."""

    kind: str
    ids: IdSpace
    protocol: Protocol
    tune: TrainData
    final: TrainData


def check(protocol: Protocol) -> None:
    """Refuse folds that cannot train or tune, before any expensive work."""
    for fold in (protocol.tune, protocol.final):
        if not fold.train["positive"].any():
            raise DataError(f"{fold.name} fold: the training set has no positive interactions")
    if protocol.tune.test.empty:
        raise DataError("the validation fold is empty: nothing to tune or stop early on")


def prepare(ds: Dataset, kind: str, train_end: str | None = None, protocol: str = "auto",
            content: bool = True, cache_dir: Path | None = None, seed: int = 0,
            cold_fraction: float = 0.2, clip_checkpoint: Path | None = None,
            clip_model: str | None = None) -> Prepared:
    rows = timeline(ds.interactions, ds.history)
    if rows.empty:
        raise DataError(f"{ds.path}: no consumed interactions to train on")
    proto = make_protocol(kind, rows, train_end, protocol, seed, cold_fraction)
    check(proto)
    emb = content_matrix(ds.items, cache_dir, clip_checkpoint, clip_model) if content else None
    ids = build_id_space(ds.items, ds.users, rows, emb)
    tune = encode(ids, proto.tune.train, proto.tune.now)
    same = proto.final.train is proto.tune.train and proto.final.now == proto.tune.now
    final = tune if same else encode(ids, proto.final.train, proto.final.now)
    return Prepared(kind, ids, proto, tune, final)


@dataclass
class Candidate:
    """A model to tune: ``grid`` is a list of settings tried as they are, or a
    :class:`SearchSpace` searched with edge extension; ``seeded``: ``make`` takes a ``seed``
    (the others are deterministic and are refitted once for all seeds); ``code``: the
    sources only its fits depend on (a :class:`FitCheckpoint` key)."""

    name: str
    make: Callable[..., Recommender]
    grid: list[dict[str, Any]] | SearchSpace = field(default_factory=lambda: [{}])
    seeded: bool = False
    code: tuple[str, ...] = ()


@dataclass
class Outcome:
    """A tuned candidate: chosen ``params`` (validation), ``valid`` metrics of that choice,
    ``test`` metrics (mean over ``seeds``; one dict per seed in ``seed_tests``, per-user
    headline metrics in ``per_user``), every tuning trial and what each axis tried."""

    name: str
    params: dict[str, Any]
    valid: dict[str, float]
    test: dict[str, float]
    fit_seconds: float
    model: Recommender
    tuning: list[tuple[dict[str, Any], dict[str, float]]] = field(default_factory=list)
    tried: dict[str, list[Any]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    seed_tests: list[dict[str, float]] = field(default_factory=list)
    per_user: list[dict[str, np.ndarray]] = field(default_factory=list)


Trial = Callable[[str, dict[str, Any]], AbstractContextManager[Callable[[dict], None]]]


@contextmanager
def _no_trial(phase: str, params: dict[str, Any]) -> Iterator[Callable[[dict], None]]:
    yield lambda metrics: None


@dataclass
class Tuned:
    result: SearchResult
    model: Recommender | None  # the chosen setting's fit on the tuning fold (None: resumed)
    seconds: float
    refit: dict[str, Any]  # what the refit takes from that fit (the two-tower's epochs)


def section_key(prep: Prepared) -> str:
    """What identifies a prepared section's folds in a :class:`FitCheckpoint`."""
    p = prep.protocol
    return (f"{prep.kind}/{p.name}/{len(prep.tune.item)}/{len(prep.final.item)}/"
            f"{len(p.tune.test)}/{len(p.final.test)}")


def tune(candidate: Candidate, prep: Prepared, trial: Trial = _no_trial,
         checkpoint: FitCheckpoint | None = None) -> Tuned:
    """Fit every setting the grid or search asks for on the tuning fold and pick the best by
    validation :data:`TUNE_METRIC`; the test fold is not touched here. Fits already in
    ``checkpoint`` are read back instead of run again."""
    kept: dict[str, Any] = {}
    section = section_key(prep)

    def fit_one(params: dict[str, Any]) -> dict[str, float]:
        done = checkpoint and checkpoint.get("tune", candidate.name, section, params,
                                                candidate.code)
        model = None
        if done:
            metrics, seconds, refit = done["metrics"], done["fit_seconds"], done["refit"]
        else:
            with trial("tune", params) as record:
                started = time.perf_counter()
                model = candidate.make(**params)
                model.fit(prep.tune, valid=prep.protocol.tune)
                seconds = time.perf_counter() - started
                metrics = evaluate(model.score, prep.tune, prep.protocol.tune)
                record({**metrics, "fit_seconds": seconds})
            refit = getattr(model, "refit_params", dict)()
            if checkpoint:
                checkpoint.put("tune", candidate.name, section, params,
                               {"metrics": metrics, "fit_seconds": seconds, "refit": refit},
                               candidate.code)
        log.info("%s %s: valid %s %.4f (fit %.0f s%s)", candidate.name, params, TUNE_METRIC,
                 metrics[TUNE_METRIC], seconds, ", resumed" if done else "")
        if "best" not in kept or metrics[TUNE_METRIC] > kept["best"][TUNE_METRIC]:
            kept.update(best=metrics, model=model, seconds=seconds, refit=refit)
        return {**metrics, "fit_seconds": seconds}

    grid = candidate.grid
    if isinstance(grid, SearchSpace):
        result = search(grid, fit_one, TUNE_METRIC)
    else:
        trials = [(params, fit_one(params)) for params in grid]
        best, metrics = select(trials, TUNE_METRIC)
        values = {k: sorted({repr(p.get(k)) for p, _ in trials}) for k in best}
        result = SearchResult(best, metrics, trials, values,
                              {k: "given" for k in best})
    return Tuned(result, kept["model"], kept["seconds"], kept["refit"])


def run(candidate: Candidate, prep: Prepared, trial: Trial = _no_trial,
        seeds: tuple[int, ...] = (0,), checkpoint: FitCheckpoint | None = None) -> Outcome:
    """Tune ``candidate`` on validation, refit the chosen setting once per seed (the
    deterministic baselines once), evaluate each refit on the test fold.

    ``trial(phase, params)`` wraps each fit ("tune" or "refit") and receives its metrics; the
    CLI uses it to give every fit a nested MLflow run. ``checkpoint``: finished fits of an
    interrupted run to resume from (tuning fits, and the refits of every seed but the first,
    whose model the caller keeps).
    """
    tuned = tune(candidate, prep, trial, checkpoint)
    chosen = tuned.result.best
    params = {**chosen, **tuned.refit}
    out = Outcome(candidate.name, params, dict(tuned.result.metrics), {}, tuned.seconds,
                  tuned.model, tuned.result.trials, tuned.result.tried, tuned.result.status)
    tune_seed = getattr(getattr(tuned.model, "train_cfg", tuned.model), "seed", 0)
    fits: dict[int | None, tuple[Recommender, float]] = {}
    section = section_key(prep)
    for seed in seeds:
        key = seed if candidate.seeded else None
        seeded = {"seed": seed} if candidate.seeded else {}
        later = bool(out.seeds) and candidate.seeded
        done = later and checkpoint and checkpoint.get("refit", candidate.name, section,
                                                       {**params, **seeded}, candidate.code)
        if done:
            test, seconds = done["test"], done["fit_seconds"]
            users = {m: np.asarray(v) for m, v in done["per_user"].items()}
        else:
            users = {}
            with trial("refit", {**params, **seeded}) as record:
                if key in fits:
                    pass
                elif (prep.final is prep.tune and tuned.model is not None
                      and (not candidate.seeded or seed == tune_seed)):
                    fits[key] = (tuned.model, tuned.seconds)  # same data, same seed: same fit
                else:
                    started = time.perf_counter()
                    fitted = candidate.make(**params, **seeded)
                    fitted.fit(prep.final)
                    fits[key] = (fitted, time.perf_counter() - started)
                model, seconds = fits[key]
                test = ({} if prep.protocol.final.test.empty else
                        evaluate(model.score, prep.final, prep.protocol.final, per_user=users))
                record({**test, "fit_seconds": seconds})
            if later and checkpoint:
                checkpoint.put("refit", candidate.name, section, {**params, **seeded},
                               {"test": test, "fit_seconds": seconds, "per_user": users},
                               candidate.code)
        out.seeds.append(seed)
        out.seed_tests.append(test)
        out.per_user.append(users)
        if len(out.seeds) == 1:
            out.model, out.fit_seconds = model, seconds
    if out.seed_tests and out.seed_tests[0]:
        out.test = {m: float(np.mean([t[m] for t in out.seed_tests]))
                    for m in out.seed_tests[0]}
    return out


def baseline_candidates(threads: int = 0, timed: bool = True) -> list[Candidate]:
    """The baselines with their validation search spaces (the popularity window needs a
    clock); every numeric axis is extended while its chosen value sits on an edge."""
    from training.retrieval import baselines as b

    windows: list[float | None] = [0.25, 0.5, 1.0, 2.0, None] if timed else [None]
    return [
        Candidate("popularity", b.Popularity,
                  SearchSpace({"window_days": windows}, joint=("window_days",))),
        Candidate("itemknn", b.ItemKNN, SearchSpace(
            {"neighbors": [100, 300, 1000], "shrink": [5.0, 20.0, 100.0]},
            joint=("neighbors", "shrink"),
            bounds={"neighbors": (10, 5000), "shrink": (0.5, 2000.0)})),
        Candidate("ease", b.EASE, SearchSpace(
            {"l2": [50.0, 150.0, 500.0, 1500.0]}, joint=("l2",), bounds={"l2": (1.0, 1e5)})),
        Candidate("als", lambda **p: b.ALS(threads=threads, **p), SearchSpace(
            {"factors": [64, 128, 256], "alpha": [3.0, 10.0, 30.0],
             "regularization": [0.01, 0.05, 0.25], "iterations": [10, 15, 25]},
            joint=("factors", "alpha"),
            bounds={"factors": (8, 1024), "alpha": (0.3, 300.0),
                    "regularization": (1e-4, 100.0), "iterations": (3, 60)}), seeded=True),
    ]


def content_knn_candidate() -> Candidate:
    """Nearest neighbours of the user's history in the text-embedding space (the frozen
    encoder the two-tower's content path reads): the content baseline for cold items."""
    from training.retrieval.baselines import ContentKNN

    return Candidate("content-knn", ContentKNN, SearchSpace(
        {"history_len": [10, 25, 50], "aggregate": ["mean", "max"]},
        joint=("aggregate",), bounds={"history_len": (1, 400)}))
