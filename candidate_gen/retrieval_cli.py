"""``reelrank index build``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from training.retrieval.cli import clean_errors, read_users, set_threads

if TYPE_CHECKING:
    import numpy as np


def index_build(
    model: Annotated[str, typer.Option(help="models:/reelrank-retrieval@champion, /3, /latest")],
    kind: Annotated[str, typer.Option(help="auto (flat < 50k items, else IVF) | flat | ivf")]
    = "auto",
    exclude: Annotated[Path | None, typer.Option(
        help="Item ids to leave out (deleted / private), one per line or a user_id-less "
             "parquet/csv with item_id.")] = None,
    target_recall: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.95,
    threads: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Build the FAISS index of a model version's item tower and store it next to the version."""
    from candidate_gen.index_store import build_for_model
    from core.config import get_settings
    from training import registry
    from training.retrieval.bundle import EXPERIMENT

    set_threads(threads)
    with clean_errors():
        settings = get_settings()
        registry.configure(settings, EXPERIMENT)
        excluded = _read_items(exclude) if exclude else None
        report = build_for_model(model, settings.path("indexes"), kind, excluded, target_recall)
        spec = report.index.spec
        t = report.timings
        typer.echo(
            f"{spec.kind} index of {len(report.index):,} items ({spec.dim}-d"
            + (f", nlist {spec.nlist}, nprobe {spec.nprobe}" if spec.kind == "ivf" else "")
            + f") built in {report.build_seconds:.1f} s; recall@100 vs exact {report.recall:.4f};"
            f" p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms, {t['qps']:,.0f} QPS batched")
        typer.echo(f"saved to {report.path} and {report.artifact_uri}")


def _read_items(path: Path) -> np.ndarray:
    import numpy as np

    if path.suffix in (".parquet", ".csv"):
        import pandas as pd

        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if "item_id" not in frame:
            from core.dataset_schema import DataError

            raise DataError(f"{path}: missing column 'item_id'")
        return frame["item_id"].to_numpy(np.int64)
    return read_users(path)  # one integer per line


def register(groups: dict[str, typer.Typer]) -> None:
    groups["index"].command("build")(index_build)
