"""``reelrank bench retrieval``: quality, training cost and ANN search of retrieval, as markdown.

Quality: every baseline and both two-tower variants on KuaiRand (temporal) and MicroLens-50K
(leave-last-out, cold-item), all tuned on validation and refitted the same way
(:func:`training.retrieval.pipeline.run`). ANN: the chosen FAISS index on 1M synthetic vectors
drawn around real item-tower outputs, against exact search, with real user-tower queries.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from benchmarks.report import machine as machine_line
from candidate_gen.faiss_index import IndexSpec, ItemIndex, exact_search, latency, recall_at_k
from core.dataset_schema import DataError
from training.retrieval.baselines import RandomScores
from training.retrieval.checkpoint import FitCheckpoint
from training.retrieval.intervals import over_seeds, paired_difference
from training.retrieval.item2item import (
    ContentInterests,
    content_interests_candidate,
    next_item_pairs,
)
from training.retrieval.metrics import HEADLINE, METRICS
from training.retrieval.pipeline import (
    TIMEZONES,
    TUNE_METRIC,
    Candidate,
    Outcome,
    Prepared,
    baseline_candidates,
    content_knn_candidate,
    load_data,
    prepare,
    run,
)
from training.retrieval.search import SearchSpace, select
from training.retrieval.towers import (
    TwoTowerRecommender,
    tuning_grid,
    two_tower_candidate,
    two_tower_configs,
    variant_name,
)

log = logging.getLogger(__name__)

SHOWN = ("recall@20", "recall@50", "recall@100", "recall@500", "ndcg@10", "ndcg@50", "hit@50",
         "coverage@50")
COLD_SHOWN = ("recall@20", "recall@50", "recall@100", "recall@500", "ndcg@10", "hit@50")


@dataclass
class Section:
    title: str
    short: str
    prep: Prepared
    outcomes: list[Outcome] = field(default_factory=list)


def _days(prep: Prepared) -> str:
    """The local days a temporal split trains and tests on, as the data has them."""
    tz, fold = TIMEZONES.get(prep.kind, "UTC"), prep.protocol.final

    def span(ms: pd.Series) -> str:
        days = pd.to_datetime(ms.dropna(), unit="ms", utc=True).dt.tz_convert(tz)
        return f"{days.min():%m-%d}..{days.max():%m-%d}"

    return f"train {span(fold.train['ts'])} + history, test {span(fold.test['ts'])}"


def machine() -> str:
    """The shared machine line plus what this benchmark depends on."""
    return f"{machine_line()}; torch threads {_torch_threads()}, faiss {faiss.__version__}"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _ann_of(sec: Section, ann_items: int) -> list[str]:
    """ANN search over synthetic vectors around the MicroLens content tower's real ones."""
    from training.retrieval.trainer import item_embeddings, user_embeddings

    tower = next(o for o in sec.outcomes if o.name == variant_name("content"))
    assert isinstance(tower.model, TwoTowerRecommender)
    bundle_model, data = tower.model.result.model, sec.prep.final
    items = item_embeddings(bundle_model, data.items).numpy()
    users = user_embeddings(bundle_model, data, np.arange(min(data.n_users, 1000)),
                            tower.model.train_cfg.history_len).numpy()
    return ann(items, users, ann_items)


def candidates(prep: Prepared, threads: int, quick: bool, cold: bool,
               epochs: int = 20) -> list[Candidate]:
    model_cfg, train_cfg = two_tower_configs(prep.kind, epochs=epochs,
                                             progress=False, threads=threads)
    has_content = prep.ids.content is not None
    grid = [{}] if quick else tuning_grid(prep.protocol.name, prep.kind)
    towers = [two_tower_candidate(v, model_cfg, train_cfg, grid, has_content=has_content)
              for v in ("id", "content")]
    timed = prep.protocol.name == "temporal"
    if cold:  # item-item and factor models give held-out items no score at all
        base = [Candidate("random", RandomScores, seeded=True)] + [
            c for c in baseline_candidates(threads, timed) if c.name == "popularity"]
        if has_content:
            base.append(content_knn_candidate())
            towers.append(content_interests_candidate())
    else:
        base = baseline_candidates(threads, timed)
    if quick:
        base = [replace(c, grid=c.grid.start()[:1] if isinstance(c.grid, SearchSpace)
                        else c.grid[:1]) for c in base]
    return base + towers


def is_tower(o: Outcome) -> bool:
    return o.name.startswith("two-tower")


def best_by_validation(outcomes: list[Outcome], metric: str = TUNE_METRIC) -> Outcome:
    """The outcome with the best *validation* ``metric``: only validation numbers reach the
    selection (a test checks it), so "best two-tower" and "best baseline" are not test picks."""
    params, _ = select([({"name": o.name}, o.valid) for o in outcomes], metric)
    return next(o for o in outcomes if o.name == params["name"])


def quality(sections: list[Section]) -> list[str]:
    lines = []
    for sec in sections:
        cold = sec.prep.protocol.name == "cold-item"
        shown = COLD_SHOWN if cold else SHOWN
        ref = next(o for o in sec.outcomes if o.name == "popularity").test
        fold = sec.prep.protocol.final
        seeds = sec.outcomes[0].seeds
        lines += [f"### {sec.title}", "",
                  f"{len(fold.test):,} test positives of {int(ref.get('users', 0)):,} users; "
                  f"training rows {len(sec.prep.final.item):,}; catalog "
                  f"{len(fold.catalog) if fold.catalog is not None else sec.prep.final.n_items:,}"
                  f" items ranked. Test metrics are means over seeds {seeds}.", "",
                  "| model | " + " | ".join(shown) + " | R@50 / pop | NDCG@10 / pop |",
                  "|---" * (len(shown) + 3) + "|"]
        for o in sec.outcomes:
            ratios = [o.test[m] / ref[m] if ref[m] else float("inf") for m in
                      ("recall@50", "ndcg@10")]
            lines.append(f"| {o.name} | " + " | ".join(f"{o.test[m]:.4f}" for m in shown)
                         + " | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
        lines += ["", *headline(sec), "", "Search on validation Recall@50 (every value tried "
                  "per axis, the chosen one in bold; an edge value is extended one step "
                  "while it stays chosen, up to its bound):", "",
                  "| model | parameter | tried | chosen | position | valid R@50 |",
                  "|---|---|---|---|---|---|"]
        for o in sec.outcomes:
            for k, values in o.tried.items():
                shown_values = ", ".join(f"**{_value(v)}**" if v == o.params.get(k)
                                         else _value(v) for v in values)
                lines.append(f"| {o.name} | {k} | {shown_values} | {_value(o.params.get(k))} | "
                             f"{o.status.get(k, '')} | {o.valid[TUNE_METRIC]:.4f} |")
            extra = {k: v for k, v in o.params.items() if k not in o.tried}
            if extra:
                lines.append(f"| {o.name} | (from validation) | | {_params(extra)} | | |")
        lines.append("")
    return lines


def headline(sec: Section) -> list[str]:
    """Mean and 95 % t-interval over seeds per model, then best two-tower (by validation)
    against the best baseline (by validation) per metric, bootstrapped over users."""
    cold = sec.prep.protocol.name == "cold-item"
    lines = ["| model | Recall@50 (95 % CI over seeds) | NDCG@10 (95 % CI over seeds) |",
             "|---|---|---|"]
    for o in sec.outcomes:
        cells = [str(over_seeds([t[m] for t in o.seed_tests])) for m in HEADLINE]
        lines.append(f"| {o.name} | " + " | ".join(cells) + " |")
    towers = [o for o in sec.outcomes if is_tower(o)]
    base = [o for o in sec.outcomes if not is_tower(o)
            and (not cold or o.name == "content-knn" or "content-knn" not in
                 {x.name for x in sec.outcomes})]
    tower = best_by_validation(towers)
    lines += ["", f"Best two-tower by validation: {tower.name}. Against the best baseline "
              "by validation on each metric (difference of means, 95 % bootstrap interval "
              "over users of the seed-averaged per-user difference; a win only when it "
              "excludes 0):", ""]
    for m in HEADLINE:
        best = best_by_validation(base, m)
        diff = paired_difference(tower.per_user, best.per_user, m)
        ratio = tower.test[m] / best.test[m] if best.test[m] else float("inf")
        verdict = ("win" if diff.low > 0 else "loss" if diff.high < 0 else
                   "no significant difference")
        lines.append(f"- {m}: {tower.name} vs {best.name}: {ratio:.3f}x, difference "
                     f"{diff} -> {verdict}")
    return lines


def _value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(p: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in p.items()) + "}" if p else "{}"


def training_cost(sections: list[Section]) -> list[str]:
    """Per model: its tuning fits and their time, the longest single fit (the issue's budget:
    about 15 minutes for one KuaiRand run), the first seed's final fit and its speed."""
    lines = ["| data set | model | tuning fits | tuning (s) | longest fit (s) | final fit (s) "
             "| epochs | examples/s | s / epoch |", "|---|---|---|---|---|---|---|---|---|"]
    for sec in sections:
        for o in sec.outcomes:
            epochs = ex = per = ""
            if isinstance(o.model, TwoTowerRecommender):
                r = o.model.result
                epochs = str(len(r.history))
                ex, per = f"{r.examples_per_s:,.0f}", f"{r.epoch_seconds:.1f}"
            elif isinstance(o.model, ContentInterests) and o.model.best_epoch:
                # Its examples are next-item pairs, counted here rather than kept by the
                # model: item2item.py's source keys its fits (training/retrieval/checkpoint.py),
                # so a change there would refit every committed tuning fit. The fit's time
                # includes encoding every item once per epoch.
                n = o.model.best_epoch
                pairs = len(next_item_pairs(o.model.data, o.model.window)[0])
                epochs, ex = str(n), f"{pairs * n / max(o.fit_seconds, 1e-9):,.0f}"
                per = f"{o.fit_seconds / n:.1f}"
            fits = [m.get("fit_seconds", 0.0) for _, m in o.tuning]
            lines.append(f"| {sec.short} | {o.name} | {len(fits)} | {sum(fits):.0f} | "
                         f"{max([*fits, o.fit_seconds]):.0f} | {o.fit_seconds:.1f} | {epochs} | "
                         f"{ex} | {per} |")
    return lines


def ann(base: np.ndarray, queries: np.ndarray, n: int, k: int = 100,
        seed: int = 0) -> list[str]:
    """Synthetic catalog: each vector a real item vector plus noise at the scale of the gap
    to its nearest neighbour, re-normalised, so clusters look like the model's."""
    rng = np.random.default_rng(seed)
    base = base / np.linalg.norm(base, axis=1, keepdims=True)
    sims, _ = ItemIndex.build(np.arange(len(base)), base).search(base[:2000], 2)
    scale = float(np.median(np.sqrt(np.clip(2 - 2 * sims[:, 1], 0, None)))) / np.sqrt(
        base.shape[1])
    vectors = base[rng.integers(0, len(base), n)]
    vectors = vectors + rng.normal(0, scale, vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    queries = np.ascontiguousarray(queries[:1000], np.float32)
    rows = []
    truth = exact_search(vectors, ids, queries, k)
    for label, spec in (("exact", IndexSpec("flat", vectors.shape[1])),
                        ("chosen (auto)", IndexSpec.for_size(n, vectors.shape[1]))):
        started = time.perf_counter()  # nprobe is tuned on 200 queries, measured on all
        index = ItemIndex.build(ids, vectors, spec, queries=queries[:200])
        build = time.perf_counter() - started
        recall = recall_at_k(index.search(queries, k)[1], truth)
        t = latency(index, queries, k)
        memory = len(faiss.serialize_index(index.index)) / 2**20
        desc = index.spec.kind + (f" nlist={index.spec.nlist} nprobe={index.spec.nprobe}"
                                  if index.spec.kind == "ivf" else "")
        rows.append((label, desc, recall, t, build, memory))
    exact_qps = rows[0][3]["qps"]
    lines = [f"{n:,} items x {vectors.shape[1]}-d, {len(queries)} real user-tower queries, "
             f"k={k}; noise scale {scale:.4f} per dimension.", "",
             "| index | config | recall@100 vs exact | p50 ms | p99 ms | batched QPS | "
             "speed-up | build s | memory MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for label, desc, recall, t, build, memory in rows:
        lines.append(f"| {label} | {desc} | {recall:.4f} | {t['p50_ms']:.2f} | "
                     f"{t['p99_ms']:.2f} | {t['qps']:,.0f} | {t['qps'] / exact_qps:.1f}x | "
                     f"{build:.1f} | {memory:,.0f} |")
    return lines


SECTIONS = ("kuairand", "microlens", "cold")


def _resumed(checkpoint: FitCheckpoint | None) -> str:
    if checkpoint is None or not checkpoint.reused:
        return ""
    files = ", ".join(f"`{p}`" for p in dict.fromkeys((checkpoint.tuning, checkpoint.path)))
    return (f" Resumed: {checkpoint.reused} fits were read back from the checkpoint of an "
            f"interrupted run of the same benchmark on the same code ({files}); the time in all "
            "counts this run only, the fit times below are those measured when each fit ran.")


def bench(kuairand: Path, microlens: Path, out: Path, ann_items: int = 1_000_000,
          threads: int = 2, quick: bool = False, cache_dir: Path | None = None,
          kuairand_train_end: str | None = "2022-04-29", seeds: int = 3,
          sections_run: tuple[str, ...] = SECTIONS, max_epochs: int | None = None,
          checkpoint_path: Path | None = None, tuning_path: Path | None = None) -> Path:
    """Every section in ``sections_run`` (tuned once on validation, refitted and tested once
    per seed), the ANN part when the MicroLens leave-last-out section ran. Fits finished by an
    interrupted run of the same benchmark are read back from ``checkpoint_path`` (the tuning
    fits from ``tuning_path`` where given)."""
    started, load_before = time.perf_counter(), os.getloadavg()
    specs = [("kuairand", "KuaiRand (temporal: {days})", "KuaiRand", "kuairand", kuairand,
              "temporal"),
             ("microlens", "MicroLens-50K (leave-last-out)", "MicroLens LLO", "microlens",
              microlens, "leave-last-out"),
             ("cold", "MicroLens-50K (cold-item: 20% of items held out of training, 10% for "
              "test)", "MicroLens cold", "microlens", microlens, "cold-item")]
    unknown = set(sections_run) - set(SECTIONS)
    if unknown:
        raise DataError(f"unknown sections {sorted(unknown)} (use {','.join(SECTIONS)})")
    epochs = 3 if quick else (max_epochs or 20)
    checkpoint = None if checkpoint_path is None else FitCheckpoint(checkpoint_path, {
        "kuairand": str(kuairand), "microlens": str(microlens), "epochs": epochs,
        "quick": quick, "kuairand_train_end": kuairand_train_end}, tuning_path)
    sections, loaded = [], {}
    for key, title, short, kind, path, protocol in specs:
        if key not in sections_run:
            continue
        if kind not in loaded:
            loaded[kind] = load_data(kind, path)
        train_end = kuairand_train_end if kind == "kuairand" else None
        prep = prepare(loaded[kind], kind, train_end, protocol, cache_dir=cache_dir)
        sec = Section(title.format(days=_days(prep)), short, prep)
        for cand in candidates(prep, threads, quick, cold=protocol == "cold-item",
                               epochs=epochs):
            log.info("bench %s: %s", title, cand.name)
            sec.outcomes.append(run(cand, prep, seeds=tuple(range(seeds)),
                                    checkpoint=checkpoint))
        sections.append(sec)
        log.info("%s done after %.0f s", title, time.perf_counter() - started)
    ann_lines = ["(not run: the MicroLens leave-last-out section was not part of this run)"]
    llo = [s for s in sections if s.prep.protocol.name == "leave-last-out"]
    if llo:
        ann_lines = _ann_of(llo[0], ann_items)
    config = (f"seeds {list(range(seeds))}, sections {','.join(sections_run)}, "
              f"at most {epochs} two-tower epochs; data: "
              + ", ".join(f"{k} {p}" for k, p in (("KuaiRand", kuairand),
                                                   ("MicroLens", microlens))
                          if any(x[0] in sections_run and x[3] == k.lower() for x in specs)))
    lines = [
        "# Retrieval benchmark", "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
        f"{time.perf_counter() - started:,.0f} s in all; load average {load_before[0]:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end (the machine is shared: timings are "
        "upper bounds). Produced by `reelrank bench retrieval`"
        + (" --quick (smoke run: not representative)" if quick else "") + f" ({config})."
        + _resumed(checkpoint), "",
        "Data: KuaiRand-Pure (Gao et al., CIKM 2022, CC BY-SA 4.0) and MicroLens-50K (Ni et al."
        " 2023, research use), read from their directories, never copied.", "",
        "Positives (targets and hits): a KuaiRand impression that was clicked and long-viewed, "
        "or liked; a KuaiRand pre-period history entry; a MicroLens view. Unclicked impressions"
        " are neither context nor targets. Items in a user's training timeline are excluded "
        "from the ranking; Recall@K = hits / held-out positives, averaged over users.", "",
        "Every model is tuned on validation (KuaiRand: 04-28; MicroLens: each user's "
        "second-to-last item; cold-item: half of the held-out items) by Recall@50, then "
        "refitted with the chosen settings on train + validation (the two-tower for its "
        "early-stopped epoch count) once per seed (the deterministic baselines once) and "
        "evaluated on the test part; the test part chooses nothing (best two-tower and best "
        "baseline are picked by validation too). Ratios are against the popularity baseline "
        "of the same run. Intervals: `training/retrieval/intervals.py` (t over seeds for "
        "each model; bootstrap over users, scipy.stats.bootstrap, for differences).", "",
        "## Quality", "", *quality(sections),
        "## Training cost", "", *training_cost(sections), "",
        "## ANN search", "", *ann_lines, "",
        "Metric definitions: `training/retrieval/metrics.py` (" + ", ".join(METRICS) + ").", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
