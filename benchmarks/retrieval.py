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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from benchmarks.report import machine as machine_line
from candidate_gen.faiss_index import IndexSpec, ItemIndex, exact_search, latency, recall_at_k
from training.retrieval.baselines import RandomScores
from training.retrieval.metrics import METRICS
from training.retrieval.pipeline import (
    Candidate,
    Outcome,
    Prepared,
    TwoTowerRecommender,
    baseline_candidates,
    load_data,
    prepare,
    run,
    tuning_grid,
    two_tower_candidate,
    two_tower_configs,
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


def machine() -> str:
    """The shared machine line plus what this benchmark depends on."""
    return f"{machine_line()}; torch threads {_torch_threads()}, faiss {faiss.__version__}"


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def candidates(prep: Prepared, threads: int, quick: bool, cold: bool) -> list[Candidate]:
    model_cfg, train_cfg = two_tower_configs(prep.kind, epochs=3 if quick else 20,
                                             progress=False, threads=threads)
    grid = [{}] if quick else tuning_grid(prep.protocol.name)
    towers = [two_tower_candidate(v, model_cfg, train_cfg, grid) for v in ("id", "content")]
    timed = prep.protocol.name == "temporal"
    if cold:  # item-item and factor models give held-out items no score at all
        base = [Candidate("random", RandomScores)] + [
            c for c in baseline_candidates(threads, timed) if c.name == "popularity"]
    else:
        base = baseline_candidates(threads, timed)
        if quick:
            base = [Candidate(c.name, c.make, c.grid[:1]) for c in base]
    return base + towers


def quality(sections: list[Section]) -> list[str]:
    lines = []
    for sec in sections:
        cold = sec.prep.protocol.name == "cold-item"
        shown = COLD_SHOWN if cold else SHOWN
        ref = next(o for o in sec.outcomes if o.name == "popularity").test
        fold = sec.prep.protocol.final
        lines += [f"### {sec.title}", "",
                  f"{len(fold.test):,} test positives of {int(ref.get('users', 0)):,} users; "
                  f"training rows {len(sec.prep.final.item):,}; catalog "
                  f"{len(fold.catalog) if fold.catalog is not None else sec.prep.final.n_items:,}"
                  " items ranked.", "",
                  "| model | " + " | ".join(shown) + " | R@50 / pop | NDCG@10 / pop |",
                  "|---" * (len(shown) + 3) + "|"]
        for o in sec.outcomes:
            ratios = [o.test[m] / ref[m] if ref[m] else float("inf") for m in
                      ("recall@50", "ndcg@10")]
            lines.append(f"| {o.name} | " + " | ".join(f"{o.test[m]:.4f}" for m in shown)
                         + " | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
        base = [o for o in sec.outcomes if not o.name.startswith("two-tower")]
        tower = max((o for o in sec.outcomes if o.name.startswith("two-tower")),
                    key=lambda o: o.test["recall@50"])
        vs = []
        for m in ("recall@50", "ndcg@10"):  # each metric against its own best baseline
            best = max(base, key=lambda o, m=m: o.test[m])
            vs.append(f"{m} {_rel(tower.test[m], best.test[m])} vs {best.name}")
        lines += ["", f"Best two-tower ({tower.name}) against the best baseline on each metric: "
                  + ", ".join(vs) + ".", "",
                  "Chosen settings (validation Recall@50): " + "; ".join(
                      f"{o.name} {_params(o.params)}" for o in sec.outcomes), ""]
    return lines


def _rel(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f}%" if b else "n/a"


def _params(p: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in p.items()) + "}" if p else "{}"


def training_cost(sections: list[Section]) -> list[str]:
    lines = ["| data set | model | tuning fits | tuning (s) | final fit (s) | epochs | examples/s "
             "| s / epoch |", "|---|---|---|---|---|---|---|---|"]
    for sec in sections:
        for o in sec.outcomes:
            epochs = ex = per = ""
            if isinstance(o.model, TwoTowerRecommender):
                r = o.model.result
                epochs = str(len(r.history))
                ex, per = f"{r.examples_per_s:,.0f}", f"{r.epoch_seconds:.1f}"
            tuning = sum(m.get("fit_seconds", 0.0) for _, m in o.tuning)
            lines.append(f"| {sec.short} | {o.name} | {len(o.tuning)} | {tuning:.0f} | "
                         f"{o.fit_seconds:.1f} | {epochs} | {ex} | {per} |")
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


def bench(kuairand: Path, microlens: Path, out: Path, ann_items: int = 1_000_000,
          threads: int = 2, quick: bool = False, cache_dir: Path | None = None,
          kuairand_train_end: str | None = "2022-04-29") -> Path:
    started, load_before = time.perf_counter(), os.getloadavg()
    specs = [("KuaiRand (temporal: train 04-25..04-28 + history, test 04-29..04-30)",
              "KuaiRand", "kuairand", kuairand, "temporal"),
             ("MicroLens-50K (leave-last-out)", "MicroLens LLO", "microlens", microlens,
              "leave-last-out"),
             ("MicroLens-50K (cold-item: 20% of items held out of training, 10% for test)",
              "MicroLens cold", "microlens", microlens, "cold-item")]
    sections, loaded = [], {}
    for title, short, kind, path, protocol in specs:
        if kind not in loaded:
            loaded[kind] = load_data(kind, path)
        train_end = kuairand_train_end if kind == "kuairand" else None
        prep = prepare(loaded[kind], kind, train_end, protocol, cache_dir=cache_dir)
        sec = Section(title, short, prep)
        for cand in candidates(prep, threads, quick, cold=protocol == "cold-item"):
            log.info("bench %s: %s", title, cand.name)
            sec.outcomes.append(run(cand, prep))
        sections.append(sec)
        log.info("%s done after %.0f s", title, time.perf_counter() - started)
    tower = next(o for o in sections[1].outcomes if o.name == "two-tower (id + content)")
    assert isinstance(tower.model, TwoTowerRecommender)
    bundle_model, data = tower.model.result.model, sections[1].prep.final
    from training.retrieval.trainer import item_embeddings, user_embeddings

    items = item_embeddings(bundle_model, data.items).numpy()
    users = user_embeddings(bundle_model, data, np.arange(min(data.n_users, 1000)),
                            tower.model.train_cfg.history_len).numpy()
    ann_lines = ann(items, users, ann_items)
    lines = [
        "# Retrieval benchmark", "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
        f"{time.perf_counter() - started:,.0f} s in all; load average {load_before[0]:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end (the machine is shared: timings are "
        "upper bounds). Produced by `reelrank bench retrieval`"
        + (" --quick (smoke run: not representative)" if quick else "") + ".", "",
        "Data: KuaiRand-Pure (Gao et al., CIKM 2022, CC BY-SA 4.0) and MicroLens-50K (Ni et al."
        " 2023, research use), read from their directories, never copied.", "",
        "Positives (targets and hits): a KuaiRand impression that was clicked and long-viewed, "
        "or liked; a KuaiRand pre-period history entry; a MicroLens view. Unclicked impressions"
        " are neither context nor targets. Items in a user's training timeline are excluded "
        "from the ranking; Recall@K = hits / held-out positives, averaged over users.", "",
        "Every model is tuned on validation (KuaiRand: 04-28; MicroLens: each user's "
        "second-to-last item; cold-item: half of the held-out items) by Recall@50, then "
        "refitted with the chosen settings on train + validation (the two-tower for its "
        "early-stopped epoch count) and evaluated once on the test part. Ratios are against "
        "the popularity baseline of the same run.", "",
        "## Quality", "", *quality(sections),
        "## Training cost", "", *training_cost(sections), "",
        "## ANN search", "", *ann_lines, "",
        "Metric definitions: `training/retrieval/metrics.py` (" + ", ".join(METRICS) + ").", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
