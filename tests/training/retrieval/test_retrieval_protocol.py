"""The protocol: choices are made on validation only, grids grow until the choice is interior,
intervals say when a difference is real, and content-kNN scores items nobody has consumed."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from training.datasets.store import Dataset
from training.retrieval import pipeline, towers
from training.retrieval import search as search_module
from training.retrieval.baselines import ContentKNN
from training.retrieval.checkpoint import TWO_TOWER_CODE
from training.retrieval.data import timeline
from training.retrieval.inputs import build_id_space, encode
from training.retrieval.intervals import over_seeds, paired_difference
from training.retrieval.pipeline import Candidate, Outcome, baseline_candidates, prepare, run
from training.retrieval.search import SearchSpace, next_value, search


def test_edge_values_are_extended_until_the_choice_is_interior() -> None:
    # A validation curve peaking at factors=512 and alpha=1: both beyond the listed grid.
    def valid(p: dict) -> dict[str, float]:
        return {"r": -abs(np.log2(p["factors"] / 512)) - abs(np.log10(p["alpha"])) - p["flag"]}

    space = SearchSpace({"factors": [64, 128, 256], "alpha": [3.0, 10.0, 30.0],
                         "flag": [0, 1]}, joint=("factors", "alpha"),
                        bounds={"factors": (8, 4096), "alpha": (0.01, 300.0)})
    res = search(space, valid, "r")
    # alpha steps geometrically down from 3 (x 3/10): 0.9 is nearest 1, 0.27 beyond it
    assert res.best["factors"] == 512 and res.best["alpha"] == pytest.approx(0.9)
    assert res.status["factors"] == "interior" and res.status["alpha"] == "interior"
    assert res.tried["factors"][-1] == 1024 and res.tried["alpha"][0] == pytest.approx(0.27)
    assert res.status["flag"] == "edge"  # an axis without bounds is reported, not extended
    # The bound stops the extension and says so.
    capped = search(SearchSpace({"factors": [64, 128]}, bounds={"factors": (8, 256)}),
                    lambda p: {"r": p["factors"]}, "r")
    assert capped.best["factors"] == 256 and capped.status["factors"] == "edge (bound)"
    assert next_value([10, 20], upward=True, bound=30) == 30
    assert next_value([0.1, 0.3], upward=False, bound=0.02) == pytest.approx(1 / 30)


def test_selection_never_receives_test_data(world: Dataset, monkeypatch) -> None:
    """Every call of the selection function happens before the test fold is evaluated and
    receives only metrics computed on the validation fold."""
    prep = prepare(world, "synth", content=False)
    events: list[tuple[str, object]] = []
    valid_results: list[dict] = []
    real_evaluate, real_select = pipeline.evaluate, search_module.select

    def spy_evaluate(score, data, fold, **kw):  # noqa: ANN001, ANN202 - test spy
        out = real_evaluate(score, data, fold, **kw)
        events.append(("evaluate", fold.name))
        if fold is prep.protocol.tune:
            valid_results.append(out)
        return out

    def spy_select(trials, metric):  # noqa: ANN001, ANN202 - test spy
        events.append(("select", [m for _, m in trials]))
        return real_select(trials, metric)

    monkeypatch.setattr(pipeline, "evaluate", spy_evaluate)
    monkeypatch.setattr(search_module, "select", spy_select)
    monkeypatch.setattr(pipeline, "select", spy_select)
    knn = next(c for c in baseline_candidates(timed=True) if c.name == "itemknn")
    small = SearchSpace({"neighbors": [20, 50], "shrink": [5.0]}, joint=("neighbors",),
                        bounds={"neighbors": (10, 100)})
    out = run(Candidate("itemknn", knn.make, small), prep, seeds=(0, 1))
    first_test = next(i for i, e in enumerate(events) if e == ("evaluate", "test"))
    selects = [i for i, e in enumerate(events) if e[0] == "select"]
    assert selects and max(selects) < first_test
    for i in selects:
        for metrics in events[i][1]:
            # the selection got the very metric dicts computed on the validation fold
            assert any(metrics == {**v, "fit_seconds": metrics["fit_seconds"]}
                       for v in valid_results)
    assert out.test and out.seeds == [0, 1] and len(out.per_user) == 2
    assert set(out.tried) == {"neighbors", "shrink"} and out.params["neighbors"] in (10, 20, 50,
                                                                                    100)

    # The benchmark's "best two-tower" and "best baseline" are picked the same way.
    from benchmarks.retrieval import best_by_validation

    def outcome(name: str, valid: float, test: float) -> Outcome:
        return Outcome(name, {}, {"recall@50": valid}, {"recall@50": test}, 0.0, None)  # type: ignore[arg-type]

    picked = best_by_validation([outcome("a", 0.3, 0.9), outcome("b", 0.4, 0.1)])
    assert picked.name == "b"


def test_content_knn_scores_unseen_items_by_their_content() -> None:
    frame = pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 2], "event": "view",
                          "ts": pd.NaT, "seq": [0, 1, 0]})
    rows = timeline(frame)
    content = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [1, 0.05, 0], [0, 0.9, 0.1],
                        [0, 0, 0]], np.float32)  # items 3, 4 unseen; item 5 has no content
    ids = build_id_space(pd.DataFrame({"item_id": np.arange(6)}),
                         pd.DataFrame({"user_id": [0, 1]}), rows, content)
    data = encode(ids, rows, None)
    for aggregate in ("mean", "max"):
        knn = ContentKNN(history_len=5, aggregate=aggregate)
        knn.fit(data)
        scores = knn.score(np.array([0, 1]))
        assert scores[0, 3] > scores[0, 4] and scores[1, 4] > scores[1, 3]
        assert scores[0, 5] == 0
    with pytest.raises(ValueError, match="content"):
        ContentKNN().fit(encode(build_id_space(pd.DataFrame({"item_id": np.arange(6)}),
                                               pd.DataFrame({"user_id": [0, 1]}), rows, None),
                                rows, None))


def test_content_knn_packed_histories_score_as_padded_ones() -> None:
    """Histories of any length (none, shorter or longer than ``history_len``), packed and cut
    into chunks, score as the last ``history_len`` items compared one by one."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, 200)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    item = rng.integers(0, 300, indptr[-1])
    content = rng.normal(size=(300, 8)).astype(np.float32)
    data = SimpleNamespace(item=item, indptr=indptr, items=SimpleNamespace(content=content))
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)
    users = rng.permutation(200)[:150]
    for aggregate in ("mean", "max"):
        knn = ContentKNN(history_len=10, aggregate=aggregate)
        knn.fit(data)  # type: ignore[arg-type]
        scores = knn.score(users)
        for row, u in enumerate(users):
            sims = unit[item[indptr[u] : indptr[u + 1]][-10:]] @ unit.T
            want = (np.zeros(300) if not len(sims) else
                    sims.mean(0) if aggregate == "mean" else sims.max(0))
            np.testing.assert_allclose(scores[row], want, atol=1e-5)


def test_intervals_over_seeds_and_paired_over_users() -> None:
    iv = over_seeds([0.30, 0.31, 0.32])
    assert iv.low < 0.31 < iv.high and np.isnan(over_seeds([0.3]).low)
    rng = np.random.default_rng(0)
    users = np.arange(2000)
    base = rng.random(2000)
    a = [{"user": users, "m": base + 0.05 + rng.normal(0, 0.1, 2000)} for _ in range(3)]
    b = [{"user": users, "m": base} for _ in range(3)]
    same = [{"user": users, "m": base + rng.normal(0, 0.1, 2000)} for _ in range(3)]
    assert paired_difference(a, b, "m").excludes_zero()
    assert not paired_difference(same, b, "m").excludes_zero()


def _counted_two_tower(fits: list[dict]) -> Candidate:
    """A small id-only two-tower searched over two temperatures; each fit's parameters are
    appended to ``fits``."""

    def two_tower(**params):  # noqa: ANN003, ANN202 - counts the fits
        fits.append(params)
        return towers.two_tower_candidate(
            "id", train_cfg=towers.TrainConfig(epochs=2, batch_size=512, progress=False)
        ).make(**params)

    space = SearchSpace({"temperature": [0.05, 0.1]}, joint=("temperature",))
    return Candidate("two-tower (id only)", two_tower, space, seeded=True)


def test_an_interrupted_run_resumes_from_its_checkpoint(world: Dataset, tmp_path) -> None:
    """The fits a run finished are read back by the next run (same results, no refitting);
    the first seed is always refitted (the report needs its model); other settings, or a
    run that was interrupted mid-search, only reuse what matches."""
    from training.retrieval.checkpoint import FitCheckpoint

    prep = prepare(world, "synth", content=False)
    fits: list[dict] = []
    cand = _counted_two_tower(fits)
    path = tmp_path / "fits.jsonl.gz"
    first = run(cand, prep, seeds=(0, 1, 2), checkpoint=FitCheckpoint(path, {"epochs": 2}))
    assert len(fits) == 2 + 3  # two tuning fits, a refit per seed

    fits.clear()
    again = FitCheckpoint(path, {"epochs": 2})
    second = run(cand, prep, seeds=(0, 1, 2), checkpoint=again)
    assert len(fits) == 1 and "seed" in fits[0] and fits[0]["seed"] == 0
    assert again.reused == 2 + 2
    assert second.params == first.params and second.valid == first.valid
    assert second.seed_tests[1:] == first.seed_tests[1:]
    for later, before in zip(second.per_user[1:], first.per_user[1:], strict=True):
        assert later.keys() == before.keys()
        for metric in later:
            np.testing.assert_allclose(later[metric], before[metric])

    fits.clear()
    other = FitCheckpoint(path, {"epochs": 3})  # another setting: nothing matches
    run(cand, prep, seeds=(0,), checkpoint=other)
    assert other.reused == 0 and len(fits) == 2 + 1

    entries = len(FitCheckpoint(path, {"epochs": 2}).entries)
    with gzip.open(path, "at") as f:
        f.write('{"key": "cut sho')  # a line the interruption cut short is skipped
    assert len(FitCheckpoint(path, {"epochs": 2}).entries) == entries
    with path.open("ab") as f:  # so is a gzip member cut short
        f.write(gzip.compress(b'{"key": "k", "record": {}}\n')[:12])
    assert len(FitCheckpoint(path, {"epochs": 2}).entries) == entries


def test_a_two_tower_change_keeps_only_the_baselines_fits(tmp_path, monkeypatch) -> None:
    """A checkpoint entry matches while the code it depends on is unchanged: an edit of the
    two-tower's model drops its fits and keeps the baselines'; an edit of the shared
    evaluation drops both. The code is hashed when a run opens its checkpoint."""
    from training.retrieval import checkpoint

    repo = tmp_path / "repo"
    for part in ("training", "models", "core"):
        shutil.copytree(checkpoint.ROOT / part, repo / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(checkpoint, "ROOT", repo)

    def kept() -> set[str]:
        ck = checkpoint.FitCheckpoint(tmp_path / "fits.jsonl", {"epochs": 2})
        return {name for name, code in (("ease", ()), ("two-tower", TWO_TOWER_CODE))
                if ck.get("tune", name, "s", {"p": 1}, code) is not None}

    ck = checkpoint.FitCheckpoint(tmp_path / "fits.jsonl", {"epochs": 2})
    ck.put("tune", "ease", "s", {"p": 1}, {"m": 1.0})
    ck.put("tune", "two-tower", "s", {"p": 1}, {"m": 2.0}, TWO_TOWER_CODE)
    assert kept() == {"ease", "two-tower"}
    with (repo / "models" / "two_tower.py").open("a") as f:
        f.write("\n# an edit\n")
    assert kept() == {"ease"}
    # the run that was open before the edit runs the code it loaded: its keys stay as they were
    assert ck.get("tune", "two-tower", "s", {"p": 1}, TWO_TOWER_CODE) is not None
    with (repo / "training" / "retrieval" / "metrics.py").open("a") as f:
        f.write("\n# an edit\n")
    assert kept() == set()


def test_an_added_axis_keeps_the_fits_made_before_it(tmp_path) -> None:
    """A search that gains an axis (``ADDED_AXES``: the value every earlier fit had) resumes
    from the fits made without it; only the axis's other values are new fits."""
    from training.retrieval.checkpoint import ADDED_AXES, FitCheckpoint

    (axis, before), = ADDED_AXES.items()
    ck = FitCheckpoint(tmp_path / "fits.jsonl", {"epochs": 2})
    ck.put("tune", "two-tower", "s", {"p": 1}, {"m": 2.0}, TWO_TOWER_CODE)
    again = FitCheckpoint(tmp_path / "fits.jsonl", {"epochs": 2})
    assert again.get("tune", "two-tower", "s", {"p": 1, axis: before}, TWO_TOWER_CODE) == {
        "m": 2.0}
    assert again.get("tune", "two-tower", "s", {"p": 1, axis: not before},
                     TWO_TOWER_CODE) is None


def test_the_cost_table_shows_the_longest_fit() -> None:
    """The issue's budget is per fit (~15 minutes for one KuaiRand run): the table shows the
    longest of a model's tuning fits and its final fit beside their sum."""
    from benchmarks.retrieval import Section, training_cost

    tuned = Outcome("ease", {}, {}, {}, 6.0, None,  # type: ignore[arg-type]
                    tuning=[({"l2": 1.0}, {"fit_seconds": 20.0}),
                            ({"l2": 3.0}, {"fit_seconds": 700.0})])
    header, _, row = training_cost([Section("KuaiRand", "KuaiRand", None,  # type: ignore[arg-type]
                                            [tuned])])
    assert "longest fit (s)" in header
    assert row.split(" | ")[1:6] == ["ease", "2", "720", "700", "6.0"]


def test_the_tuning_fits_resume_on_a_fresh_clone(world: Dataset, tmp_path) -> None:
    """The tuning fits go to their own plain JSON lines file (committed), the refits with
    their per-user metrics to the gzip one (not committed): with the gzip file gone, as on a
    fresh clone, a rerun still reads every tuning fit back and refits only the seeds."""
    from training.retrieval.checkpoint import FitCheckpoint

    prep = prepare(world, "synth", content=False)
    fits: list[dict] = []
    cand = _counted_two_tower(fits)
    refits, tuning = tmp_path / "var" / "fits.jsonl.gz", tmp_path / "tuning.jsonl"
    first = run(cand, prep, seeds=(0, 1), checkpoint=FitCheckpoint(refits, {"e": 2}, tuning))
    lines = [json.loads(line) for line in tuning.read_text().splitlines()]
    assert len(lines) == 2 and all("per_user" not in e["record"] for e in lines)
    assert refits.is_file()

    shutil.rmtree(refits.parent)
    with tuning.open("a") as f:
        f.write('{"key": "cut sho')  # a line cut short: skipped, and the next put starts anew
    fits.clear()
    again = FitCheckpoint(refits, {"e": 2}, tuning)
    second = run(cand, prep, seeds=(0, 1), checkpoint=again)
    assert again.reused == 2 and [f.get("seed") for f in fits] == [0, 1]
    assert second.params == first.params and second.valid == first.valid
    again.put("tune", "ease", "s", {"l2": 1}, {"m": 1.0})
    assert len(FitCheckpoint(refits, {"e": 2}, tuning).entries) == 2 + 1 + 1  # + seed 1


def test_the_cost_table_shows_the_interests_towers_speed() -> None:
    """The interests tower's final fit reports its epochs, next-item pairs per second and
    seconds per epoch like the two-tower (the issue keeps training cost in the results)."""
    from benchmarks.retrieval import Section, training_cost
    from training.retrieval.item2item import ContentInterests

    model = ContentInterests(window=1)
    model.best_epoch = 2
    model.data = type("Timelines", (), {"item": np.array([0, 1, 2, 3, 4]), "n_users": 2,
                                        "indptr": np.array([0, 3, 5])})()
    fitted = Outcome("interests", {}, {}, {}, 8.0, model)  # type: ignore[arg-type]
    _, _, row = training_cost([Section("MicroLens", "MicroLens", None,  # type: ignore[arg-type]
                                       [fitted])])
    # Pairs one step apart: (0, 1), (1, 2), (3, 4): 3 pairs x 2 epochs in 8 s.
    assert row.removesuffix(" |").split(" | ")[5:9] == ["8.0", "2", "1", "4.0"]


def test_bench_names_the_days_the_data_has() -> None:
    """The KuaiRand section's title gives the local (UTC+8) days its split trained and
    tested on, read from the folds (a later log's test reaches its own last day), not fixed
    dates; history rows without a time do not count."""
    from types import SimpleNamespace

    import pandas as pd

    from benchmarks.retrieval import _days

    ms = lambda *stamps: pd.Series(  # noqa: E731
        [pd.Timestamp(t).value // 10**6 if t else None for t in stamps], dtype=float)
    final = SimpleNamespace(train=pd.DataFrame({"ts": ms("2022-04-24T17:00Z", None,
                                                       "2022-04-28T15:00Z")}),
                            test=pd.DataFrame({"ts": ms("2022-04-28T16:30Z",
                                                      "2022-05-07T03:00Z")}))
    prep = SimpleNamespace(kind="kuairand", protocol=SimpleNamespace(final=final))
    assert _days(prep) == "train 04-25..04-28 + history, test 04-29..05-07"
