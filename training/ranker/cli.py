"""``reelrank train ranker``, ``reelrank rank`` and ``reelrank eval ranker``.

Bad input (a missing path or column, an unknown model alias, a split with no training rows)
ends with one ``error:`` line and exit code 2. The model is registered only after training,
evaluation and logging succeeded, so a failure registers nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.config import get_settings
from core.dataset_schema import DataError

if TYPE_CHECKING:
    import pandas as pd

    from training.datasets.store import Dataset
    from training.ranker.bundle import RankerBundle

DATASETS = ("kuairand", "synth")


@contextmanager
def clean_errors() -> Iterator[None]:
    """Expected failures as one line on stderr and exit code 2."""
    from features.store import FeatureStoreError
    from training.registry import ModelNotFound

    try:
        yield
    except (DataError, ModelNotFound, FeatureStoreError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def parse_weights(text: str | None) -> dict[str, float]:
    """``"click=1,like=2,hate=-5"`` -> a dict (the final score's task weights)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise DataError(f"--weights: expected task=number, got {part!r}") from None
    return out


def format_metrics(table: pd.DataFrame) -> str:
    """Per task and model: AUC, log-loss, GAUC, ECE (the eval table, for the terminal)."""
    cols = [c for c in ("auc", "logloss", "gauc", "gauc_users", "ece", "mean_pred", "mean_obs")
            if c in table]
    return table.set_index(["task", "model"])[cols].round(4).to_string()


def train_ranker(
    dataset: Annotated[str, typer.Option(help=f"Data set kind: {'|'.join(DATASETS)}.")],
    data: Annotated[Path, typer.Option(help="A data set dir, or a raw KuaiRand dir.")],
    train_end: Annotated[str | None, typer.Option(
        help="Train on impressions before this date (KuaiRand dates are UTC+8), test on the "
             "rest; a date after the data trains on the whole log. Default: test on the last "
             "day.")] = None,
    feature_repo: Annotated[Path | None, typer.Option(
        help="Feast repo holding the data's features (default <var>/feature_repos/<name>).")]
    = None,
    build_features: Annotated[bool, typer.Option(
        help="(Re)build the data's batch snapshots into the feature repo first.")] = True,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping).")] = 12,
    batch_size: Annotated[int, typer.Option(min=2)] = 1024,
    lr: Annotated[float, typer.Option()] = 2e-3,
    experts: Annotated[int, typer.Option(min=1, help="MMoE experts (1: shared bottom).")] = 3,
    weights: Annotated[str | None, typer.Option(
        help="Final-score task weights, e.g. 'click=1,like=2,hate=-5' (others: defaults).")]
    = None,
    lightgbm: Annotated[bool, typer.Option(help="LightGBM baseline in the same run.")] = True,
    single_task: Annotated[str, typer.Option(
        help="Tasks to train single-task baselines for ('' for none).")] = "click,long_view",
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch / LightGBM threads.")] = 2,
    history_len: Annotated[int, typer.Option(
        min=0, max=200, help="Watched videos the target attention may read (0: no history "
        "input; whether the network uses it is chosen on validation).")] = 20,
    register: Annotated[bool, typer.Option(help="Register a reelrank-ranker version.")] = True,
    alias: Annotated[str | None, typer.Option(
        help="Alias for the new version (the first version becomes champion).")] = None,
    progress: Annotated[bool, typer.Option(help="Print each epoch's losses.")] = True,
) -> None:
    """Train the multi-task ranker and its baselines on the point-in-time training set, log
    everything to MLflow and register the ranker."""
    import mlflow
    import pandas as pd

    from models.ranker import DEFAULT_WEIGHTS, RankerConfig
    from training import lineage, registry
    from training.ranker.bundle import EXPERIMENT, MODEL_NAME, log_bundle
    from training.ranker.pipeline import (
        RunConfig,
        build_feature_repo,
        default_end,
        point_in_time,
        run,
    )
    from training.ranker.trainer import TrainConfig
    from training.retrieval.pipeline import TIMEZONES, load_data, parse_day

    with clean_errors():
        if dataset not in DATASETS:
            raise DataError(f"unknown dataset kind {dataset!r} (use {'|'.join(DATASETS)})")
        score_weights = DEFAULT_WEIGHTS | parse_weights(weights)
        ds = load_data(dataset, data)
        settings = get_settings()
        repo = feature_repo or Path(settings.var_dir) / "feature_repos" / ds.name
        if build_features or not (repo / "meta.json").is_file():
            typer.echo(f"building batch features of {ds.name} into {repo}")
            build_feature_repo(settings, repo, ds)
        frame = point_in_time(settings, repo, ds.interactions, ds.items,
                              history=ds.history)
        if frame.empty:
            raise DataError(f"{data}: no timestamped impressions to train on")
        end = (parse_day(train_end, dataset) if train_end
               else default_end(frame["ts"], TIMEZONES.get(dataset, "UTC")))
        cfg = RunConfig(
            model=RankerConfig(n_experts=experts, score_weights=score_weights),
            train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
            lightgbm=lightgbm,
            single_tasks=tuple(t.strip() for t in single_task.split(",") if t.strip()),
            threads=threads,
            history_len=history_len,
        )
        registry.configure(settings, EXPERIMENT)

        def on_epoch(phase: str, epoch: int, row: dict[str, float]) -> None:
            registry.log_metrics(row, prefix=f"{phase}_", step=epoch)
            if progress:
                typer.echo(f"{phase} epoch {epoch}: "
                           + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))

        with mlflow.start_run(run_name=f"ranker {dataset}") as active:
            meta = {"dataset": dataset, "data": str(Path(data).resolve()),
                    "feature_repo": str(repo.resolve()), "run_id": active.info.run_id}
            mlflow.log_params({
                "dataset": dataset, "data": meta["data"], "feature_repo": meta["feature_repo"],
                "train_end": end.isoformat(), "impressions": len(frame),
                **{f"model.{k}": v for k, v in asdict(cfg.model).items()
                   if k not in ("cardinalities", "score_weights")},
                **{f"weight.{k}": v for k, v in score_weights.items()},
                **{f"train.{k}": v for k, v in asdict(cfg.train).items()},
                "lightgbm": lightgbm, "single_tasks": ",".join(cfg.single_tasks),
            })
            outcome = run(frame, end, cfg, on_epoch, meta)
            mlflow.log_params({"tasks": ",".join(outcome.tasks), "best_epoch": outcome.best_epoch,
                               **{f"rows.{k}": v for k, v in outcome.rows.items()},
                               "categorical": ",".join(outcome.bundle.featurizer.categorical),
                               "numeric": ",".join(outcome.bundle.featurizer.numeric)})
            sel = outcome.selection
            if sel is not None:  # every choice, made on the validation day
                mlflow.log_params({
                    "chosen.model": sel.chosen, "chosen.lr": sel.train.lr,
                    "chosen.aux_weight": sel.train.loss_weights.get("like", 1.0),
                    "chosen.history": sel.history,
                    **{f"chosen.lightgbm.{t}.{k}": v for t, p in sel.lgb_params.items()
                       for k, v in p.items() if t in ("click", "long_view")},
                })
                mlflow.log_table(pd.DataFrame(sel.net_trials), artifact_file="eval/net_trials.json")
                mlflow.log_table(pd.DataFrame(sel.lgb_trials), artifact_file="eval/lgb_trials.json")
            for name, metrics in outcome.metrics.items():
                registry.log_metrics(metrics, prefix=f"test_{name}_")
            registry.log_metrics({f"{k}_seconds": v for k, v in outcome.seconds.items()},
                                 "train_")
            if not outcome.eval_table.empty:
                mlflow.log_table(outcome.eval_table, artifact_file="eval/eval_table.json")
                mlflow.log_table(outcome.calibration, artifact_file="eval/calibration.json")
            uri = log_bundle(outcome.bundle, frame)
            fz = outcome.bundle.featurizer
            logged = {f"test_{name}_{registry.metric_key(k)}": v
                      for name, metrics in outcome.metrics.items() for k, v in metrics.items()}
            tags = lineage.version_tags(MODEL_NAME, Path(data), f"temporal {end.isoformat()}",
                                        [*fz.categorical, *fz.numeric], logged,
                                        active.info.run_id)
            mlflow.set_tags(tags)
            version = (registry.register(uri, MODEL_NAME, active.info.run_id, alias, tags,
                                         lineage.eval_description(outcome.eval_table))
                       if register else None)
        if not outcome.eval_table.empty:
            typer.echo(format_metrics(outcome.eval_table))
        typer.echo(f"run {active.info.run_id}; tasks {', '.join(outcome.tasks)}; "
                   f"best epoch {outcome.best_epoch}; watch history "
                   f"{'read' if outcome.bundle.featurizer.history_len else 'not read'}; "
                   + ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items()))
        if version is not None:
            typer.echo(f"registered models:/{MODEL_NAME}/{version.version}")


def read_impressions(path: Path, kind: str) -> Dataset | pd.DataFrame:
    """A data set directory (its interactions and items), or one log file: a KuaiRand log
    (``user_id, video_id, time_ms, ...``) or canonical interactions (parquet / CSV)."""
    import pandas as pd

    from core.dataset_schema import validate
    from training.datasets import kuairand
    from training.retrieval.pipeline import load_data

    if path.is_dir():
        return load_data(kind, path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    columns = (pd.read_parquet(path).columns if path.suffix == ".parquet"
               else pd.read_csv(path, nrows=0).columns)
    if {"video_id", "time_ms"} <= set(columns):
        table = kuairand.read_interactions(path)
    else:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return validate("interactions", table, str(path)).to_pandas()


ModelOpt = Annotated[str, typer.Option(
    help="models:/reelrank-ranker@champion, /3, or a dir.")]
ImpressionsOpt = Annotated[Path, typer.Option(
    help="Logged impressions: a KuaiRand log file, canonical interactions, or a data set dir.")]
FeatureRepoOpt = Annotated[Path | None, typer.Option(
    help="Feast repo to read features from (default: the one the model was trained on).")]
ItemsOpt = Annotated[Path | None, typer.Option(
    help="Data set dir whose items table describes the videos (default: the impressions dir, "
         "else the model's training data).")]
ThreadsOpt = Annotated[int, typer.Option(min=1)]
HistoryOpt = Annotated[Path | None, typer.Option(
    help="Data set dir with the events before the log (default: the model's training data); "
         "read only when the log is later than the feature repo.")]
RebuildOpt = Annotated[bool, typer.Option(
    help="Rebuild the daily snapshots from the history + the log when the log is later than "
         "the feature repo (else such a log is refused).")]


def scored_log(model: str, impressions: Path, feature_repo: Path | None, items: Path | None,
               history: Path | None, rebuild_features: bool, labels: bool = False,
               ) -> tuple[RankerBundle, str, pd.DataFrame, pd.DataFrame]:
    """(the ranker, its name, the log's impressions with the features each would have had
    online (with ``labels``, one column per task), the log's impressions as logged: row for
    row the same)."""
    import tempfile

    import pandas as pd

    from training import registry
    from training.ranker.bundle import EXPERIMENT, RankerBundle
    from training.ranker.pipeline import timed_impressions
    from training.ranker.scoring import needs_rebuild, scoring_frame
    from training.retrieval.pipeline import load_data

    if model.startswith("models:/"):
        registry.configure(get_settings(), EXPERIMENT)
        bundle, version = registry.load_bundle(model, RankerBundle)
        name = f"{version.name} v{version.version}"
    else:
        bundle, name = RankerBundle.load(Path(model)), model
    kind = bundle.meta.get("dataset", "synth")
    got = read_impressions(impressions, kind)
    inter = got if isinstance(got, pd.DataFrame) else got.interactions
    if items is not None:
        item_table = load_data(kind, items).items
    elif not isinstance(got, pd.DataFrame):
        item_table = got.items
    elif bundle.meta.get("data"):
        item_table = load_data(kind, Path(bundle.meta["data"])).items
    else:
        raise DataError("--items: needed to describe the videos of a single log file")
    repo = feature_repo or Path(bundle.meta.get("feature_repo", ""))
    if not (repo / "meta.json").is_file():
        raise DataError(f"{repo}: no built feature repo (pass --feature-repo)")
    settings = get_settings()
    past, scratch = None, None
    if rebuild_features and needs_rebuild(settings, repo, inter):
        source = history or (Path(bundle.meta["data"]) if bundle.meta.get("data") else None)
        if source is None:
            raise DataError("--history: the log is later than the feature repo, and the "
                            "events before it are needed to rebuild its snapshots")
        past = load_data(kind, source)
        scratch = tempfile.TemporaryDirectory(prefix="rank-features-",
                                              dir=Path(settings.var_dir))
        typer.echo(f"the log is later than {repo}: rebuilding its daily snapshots from "
                   f"{source} + the log")
    try:
        frame = scoring_frame(settings, repo, inter, item_table, past,
                              Path(scratch.name) / "repo" if scratch else None, labels)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return bundle, name, frame, timed_impressions(inter)


def rank(model: ModelOpt, impressions: ImpressionsOpt,
         out: Annotated[Path, typer.Option(help="Output parquet: user_id, video_id, time_ms, "
                                           "score, one column per task.")],
         feature_repo: FeatureRepoOpt = None, items: ItemsOpt = None, threads: ThreadsOpt = 2,
         history: HistoryOpt = None, rebuild_features: RebuildOpt = True) -> None:
    """Score logged impressions, each with the features it would have had online: from the
    feature repo when it covers the log, else from the daily snapshots rebuilt from the
    history and the log (events strictly before each impression). Never from defaults."""
    import pandas as pd
    import torch

    from training.ranker.bundle import output_frame

    torch.set_num_threads(threads)
    with clean_errors():
        bundle, name, frame, _ = scored_log(model, impressions, feature_repo, items, history,
                                            rebuild_features)
        scores, preds = bundle.predict(frame)
        result = pd.concat([
            pd.DataFrame({
                "user_id": frame["user_id"].to_numpy(),
                "video_id": frame["video_id"].to_numpy(),
                "time_ms": pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ms")
                .astype("int64").to_numpy(),
            }),
            output_frame(bundle, scores, preds),
        ], axis=1)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_parquet(out, index=False)
        typer.echo(f"scored {len(result):,} impressions with {name} -> {out}")


def eval_ranker(model: ModelOpt, impressions: ImpressionsOpt,
                feature_repo: FeatureRepoOpt = None, items: ItemsOpt = None,
                threads: ThreadsOpt = 2, history: HistoryOpt = None,
                rebuild_features: RebuildOpt = True) -> None:
    """Score logged impressions as ``reelrank rank`` does and print each task's AUC,
    log-loss, GAUC, ECE and mean prediction against the observed rate (the training report's
    table): a registered ranker on a log it has not seen, e.g. a later week of the app."""
    import numpy as np
    import pandas as pd
    import torch

    from features.training_set import LABELS
    from training.ranker.metrics import eval_row, task_metrics

    torch.set_num_threads(threads)
    with clean_errors():
        bundle, name, frame, log = scored_log(model, impressions, feature_repo, items, history,
                                              rebuild_features, labels=True)
        _, preds = bundle.predict(frame)
        ratio = set(bundle.model.cfg.ratio_tasks)
        rows = []
        for task, p in preds.items():
            outcome = LABELS.get(task, "")
            if task not in frame or outcome not in log or log[outcome].isna().all():
                continue  # the log has no outcome for it
            # A row whose outcome the log does not know is left out, not counted a negative.
            y = np.where(log[outcome].isna(), np.nan, frame[task].to_numpy(np.float64))
            rows.append(eval_row(name, task, task_metrics(task, y, p, frame["user_id"].to_numpy(),
                                                          ratio=task in ratio)))
        if not rows:
            raise DataError(f"{impressions}: no outcome column of any task the model has "
                            f"({', '.join(preds)})")
        typer.echo(f"{len(frame):,} impressions")
        typer.echo(format_metrics(pd.DataFrame(rows)))


def register(groups: dict[str, typer.Typer]) -> None:
    groups["train"].command("ranker")(train_ranker)
    groups["__root__"].command("rank")(rank)
    groups["eval"].command("ranker")(eval_ranker)
