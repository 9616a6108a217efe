"""``reelrank train retrieval``, ``reelrank eval retrieval`` and ``reelrank recommend``.

Bad input (a missing path or column, an empty training set, an unknown model alias) ends with
one ``error:`` line and exit code 2. Inputs are checked before the MLflow run starts, and the
model is registered only after everything else succeeded, so a failure registers nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.dataset_schema import DataError

if TYPE_CHECKING:
    import numpy as np

from training.retrieval import DATASET_KINDS

# torch, pandas, mlflow and the training code load inside the commands: ``reelrank --help``
# and every other command start without them.


@contextmanager
def clean_errors() -> Iterator[None]:
    """Expected failures as one line on stderr and exit code 2."""
    from training.registry import ModelNotFound

    try:
        yield
    except (DataError, ModelNotFound, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def set_threads(threads: int | None) -> None:
    import torch

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per name, one column per metric."""
    cols = sorted({k for r in rows.values() for k in r if k != "users"},
                  key=lambda c: (c.split("@")[0], int(c.split("@")[1]) if "@" in c else 0))
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" if c in r else "" for c in cols)
                     + " |")
    return "\n".join(lines)


def _mlflow_trial(phase: str, params: dict[str, Any]):  # noqa: ANN202 - a context manager
    """Each fit of the tuning loop as a nested MLflow run with its per-epoch metrics."""
    import mlflow

    from training import registry

    @contextmanager
    def ctx() -> Iterator[Callable[[dict], None]]:
        with mlflow.start_run(run_name=f"{phase} {params}", nested=True):
            mlflow.log_params({"phase": phase, **params})
            yield lambda metrics: registry.log_metrics(
                {k: v for k, v in metrics.items() if k != "users"}, prefix=f"{phase}_")

    return ctx()


def _epoch_logger(epoch: int, row: dict[str, float]) -> None:
    from training import registry

    registry.log_metrics(row, step=epoch)


def train_retrieval(
    dataset: Annotated[str, typer.Option(help=f"Data set kind: {'|'.join(DATASET_KINDS)}.")],
    data: Annotated[Path, typer.Option(help="A data set dir, or a raw KuaiRand/MicroLens dir.")],
    train_end: Annotated[str | None, typer.Option(
        help="Train on everything before this date (KuaiRand dates are UTC+8); later rows are "
             "the test. Default: the last two days are the test.")] = None,
    protocol: Annotated[str, typer.Option(
        help="auto|temporal|leave-last-out|cold-item (auto: temporal when timestamped).")] = "auto",
    variant: Annotated[str, typer.Option(help="content (id + content + features) | id")]
    = "content",
    clip_checkpoint: Annotated[Path | None, typer.Option(
        help="Local open_clip checkpoint (dir with open_clip_config.json, or a weights file "
             "with --clip-model) for thumbnails; default EfficientNet-Lite0.")] = None,
    clip_model: Annotated[str | None, typer.Option(help="open_clip architecture name.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping).")] = 20,
    batch_size: Annotated[int | None, typer.Option(min=2)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    logq: Annotated[float | None, typer.Option(help="Log-Q correction weight (0: off).")]
    = None,
    random_negatives: Annotated[int | None, typer.Option(min=0)] = None,
    dim: Annotated[int | None, typer.Option(min=2)] = None,
    user_id: Annotated[bool | None, typer.Option(help="A user-id embedding in the user tower.")]
    = None,
    tune: Annotated[bool, typer.Option(
        help="Grid-search on validation (user-id embedding, temperature; id dropout for "
             "cold items).")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    register: Annotated[bool, typer.Option(help="Register a reelrank-retrieval version.")] = True,
    alias: Annotated[str | None, typer.Option(
        help="Alias for the new version (the first version becomes champion).")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
) -> None:
    """Train the two-tower retriever, evaluate it, log it to MLflow and register it.

    Unset options take the data set's validated defaults (see ``TWO_TOWER_DEFAULTS``)."""
    import mlflow
    import pandas as pd

    from core.config import get_settings
    from training import lineage, registry
    from training.content import image_encoder_name
    from training.retrieval.bundle import (
        EXPERIMENT,
        MODEL_NAME,
        feature_names,
        log_bundle,
        make_bundle,
    )
    from training.retrieval.pipeline import load_data, prepare, run
    from training.retrieval.towers import (
        TwoTowerRecommender,
        tuning_grid,
        two_tower_candidate,
        two_tower_configs,
    )

    set_threads(threads)
    with clean_errors():
        ds = load_data(dataset, data)
        prep = prepare(ds, dataset, train_end, protocol, content=variant == "content",
                       cache_dir=get_settings().path("content"), seed=seed,
                       clip_checkpoint=clip_checkpoint, clip_model=clip_model)
        model_cfg, train_cfg = two_tower_configs(
            dataset, epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature,
            logq=logq, random_negatives=random_negatives, dim=dim, user_id=user_id, seed=seed,
            progress=progress)
        candidate = two_tower_candidate(variant, model_cfg, train_cfg,
                                        tuning_grid(prep.protocol.name, dataset) if tune else None,
                                        _epoch_logger)
        registry.configure(get_settings(), EXPERIMENT)
        final = prep.protocol.final
        with mlflow.start_run(run_name=f"{candidate.name} {dataset}") as active:
            mlflow.log_params({
                "dataset": dataset, "data": str(Path(data).resolve()),
                "protocol": prep.protocol.name, "variant": variant,
                "train_end": final.now.isoformat() if final.now is not None else "",
                "train_rows": len(prep.final.item), "test_rows": len(final.test),
                **{f"model.{k}": v for k, v in asdict(model_cfg).items()},
                **{f"train.{k}": v for k, v in asdict(train_cfg).items()},
            })
            outcome = run(candidate, prep, trial=_mlflow_trial)
            mlflow.log_params({f"best.{k}": v for k, v in outcome.params.items()})
            registry.log_metrics({k: v for k, v in outcome.valid.items() if k != "users"},
                                 "valid_")
            registry.log_metrics({k: v for k, v in outcome.test.items() if k != "users"},
                                 "test_")
            table = pd.DataFrame([{"split": "valid", **outcome.valid}]
                                 + ([{"split": "test", **outcome.test}] if outcome.test else []))
            model = outcome.model
            assert isinstance(model, TwoTowerRecommender)
            bundle = make_bundle(model.result.model, prep.final, train_cfg.history_len, {
                "dataset": dataset, "data": str(Path(data).resolve()),
                "protocol": prep.protocol.name, "variant": variant, "seed": seed,
                "train_end": final.now.isoformat() if final.now is not None else None,
                "run_id": active.info.run_id,
                # which image encoder the content's image part (if any) came from, so a new
                # upload's poster is embedded the same way (candidate_gen/fresh_items.py)
                "image_encoder": image_encoder_name(clip_checkpoint, clip_model),
            })
            uri = log_bundle(bundle, table)
            logged = {f"test_{registry.metric_key(k)}": v for k, v in outcome.test.items()}
            seeded = None if prep.protocol.name == "temporal" else f"seed={seed}"
            split = " ".join(filter(None, (prep.protocol.name, bundle.meta["train_end"], seeded)))
            tags = lineage.version_tags(MODEL_NAME, Path(data), split, feature_names(bundle),
                                        logged, active.info.run_id)
            mlflow.set_tags(tags)
            version = (registry.register(uri, MODEL_NAME, active.info.run_id, alias, tags,
                                         lineage.eval_description(table))
                       if register else None)
        rows = {"valid": outcome.valid} | ({"test": outcome.test} if outcome.test else {})
        typer.echo(format_table(rows))
        typer.echo(f"run {active.info.run_id}; best {outcome.params}; "
                   f"refit {outcome.fit_seconds:.0f} s")
        if version is not None:
            typer.echo(f"registered models:/{MODEL_NAME}/{version.version}")


def eval_retrieval(
    model: Annotated[str, typer.Option(help="models:/reelrank-retrieval@champion, /3, /latest")],
    data: Annotated[Path | None, typer.Option(help="Data to test on (default: the model's).")]
    = None,
    max_users: Annotated[int | None, typer.Option(min=1)] = None,
    threads: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Evaluate a registered model on the test part of its data (or of --data)."""
    import mlflow

    from core.config import get_settings
    from training import registry
    from training.retrieval.bundle import EXPERIMENT, Bundle
    from training.retrieval.data import timeline
    from training.retrieval.metrics import evaluate
    from training.retrieval.pipeline import load_data, make_protocol

    set_threads(threads)
    with clean_errors():
        registry.configure(get_settings(), EXPERIMENT)
        bundle, version = registry.load_bundle(model, Bundle)
        meta = bundle.meta
        ds = load_data(meta["dataset"], data or Path(meta["data"]))
        rows = timeline(ds.interactions, ds.history)
        fold = make_protocol(meta["dataset"], rows, meta.get("train_end"), meta["protocol"],
                             meta.get("seed", 0)).final
        if fold.test.empty:
            raise DataError(f"{data or meta['data']}: no test interactions after the model's "
                            "training data")
        metrics = evaluate(bundle.score, bundle.data, fold, max_users=max_users)
        with mlflow.start_run(run_name=f"eval {model}"):
            mlflow.set_tags({"eval_of": model, "model_version": version.version})
            registry.log_metrics({k: v for k, v in metrics.items() if k != "users"}, "test_")
        typer.echo(format_table({f"{version.name} v{version.version}": metrics}))


def read_users(path: Path) -> np.ndarray:
    """User ids from a parquet / CSV file with a ``user_id`` column, or one id per line."""
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
        try:
            return np.asarray([int(x) for x in lines], np.int64)
        except ValueError:
            raise DataError(f"{path}: expected one integer user id per line") from None
    if "user_id" not in frame:
        raise DataError(f"{path}: missing column 'user_id'")
    return frame["user_id"].to_numpy(np.int64)


def recommend(
    model: Annotated[str, typer.Option(help="models:/reelrank-retrieval@champion")],
    users: Annotated[Path, typer.Option(help="Parquet/CSV with user_id, or one id per line.")],
    out: Annotated[Path, typer.Option(help="Output parquet: user_id, item_id, rank, score.")],
    k: Annotated[int, typer.Option(min=1)] = 100,
    threads: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Each user's top-K, without items they interacted with in the model's training data."""
    from core.config import get_settings
    from training import registry
    from training.retrieval.bundle import EXPERIMENT, Bundle

    set_threads(threads)
    with clean_errors():
        ids = read_users(users)
        registry.configure(get_settings(), EXPERIMENT)
        bundle, version = registry.load_bundle(model, Bundle)
        recs = bundle.recommend(ids, k)
        out.parent.mkdir(parents=True, exist_ok=True)
        recs.to_parquet(out, index=False)
        typer.echo(f"wrote {len(recs):,} rows for {len(ids):,} users to {out} "
                   f"({version.name} v{version.version})")


def register(groups: dict[str, typer.Typer]) -> None:
    groups["train"].command("retrieval")(train_retrieval)
    groups["eval"].command("retrieval")(eval_retrieval)
    groups["__root__"].command("recommend")(recommend)
