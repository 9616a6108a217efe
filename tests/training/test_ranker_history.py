"""The ranker's watch-history input (issue 12): the history of an impression holds only what
the user watched strictly before it, the featurizer encodes it in the candidate's own
vocabularies, and the target attention reads nothing but the real (non-padding) entries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.ranker import Ranker, RankerConfig
from training.ranker.featurizer import Featurizer
from training.ranker.history import HISTORY_COLUMN, PAD, as_lists, watch_history

T0 = pd.Timestamp("2022-04-25", tz="UTC")


def _log(rows: list[tuple[int, int, int, bool]]) -> pd.DataFrame:
    """(user, video, minute, clicked) impressions."""
    return pd.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "ts": [T0 + pd.Timedelta(minutes=r[2]) for r in rows],
        "event": "impression", "clicked": [r[3] for r in rows]})


def _ms(minutes: list[int]) -> np.ndarray:
    return np.array([(T0 + pd.Timedelta(minutes=m)).value // 1_000_000 for m in minutes])


def test_history_is_strictly_before_newest_first_distinct() -> None:
    log = _log([(1, 10, 0, True), (1, 11, 1, False), (1, 12, 2, True), (1, 10, 3, True),
                (1, 13, 5, True), (2, 20, 0, True)])
    prior = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [30, 31, 32], "ts": pd.NaT,
                          "event": ["view", "view", "like"], "seq": [0, 1, 0]})
    got = watch_history(np.array([1, 1, 1, 2, 3]), _ms([0, 3, 5, 0, 9]), log, prior, length=4)
    # At minute 0: nothing timed yet, only the pre-log views (newest = the last in order).
    assert got[0].tolist() == [31, 30, PAD, PAD]
    # At minute 3: the click at minute 3 itself is not before it; 11 was not clicked.
    assert got[1].tolist() == [12, 10, 31, 30]
    # At minute 5: 10 again at minute 3 moves it first, once; the list is capped.
    assert got[2].tolist() == [10, 12, 31, 30]
    assert got[3].tolist() == [PAD] * 4, "a user's own impression at that instant is not history"
    assert got[4].tolist() == [PAD] * 4, "an unknown user has an empty history"
    assert as_lists(got[:1]) == [[31, 30]]


def test_rewriting_the_future_leaves_the_history_unchanged() -> None:
    rng = np.random.default_rng(0)
    n = 400
    log = _log([(int(u), int(v), int(m), bool(c)) for u, v, m, c in zip(
        rng.integers(0, 5, n), rng.integers(0, 50, n), rng.integers(0, 1000, n),
        rng.random(n) < 0.5, strict=True)])
    at = _ms([500] * 5)
    users = np.arange(5)
    before = watch_history(users, at, log)
    changed = log.copy()
    late = changed["ts"] >= T0 + pd.Timedelta(minutes=500)
    changed.loc[late, "clicked"] = True
    changed.loc[late, "item_id"] = 999
    assert np.array_equal(before, watch_history(users, at, changed))
    assert not np.array_equal(watch_history(users, _ms([999] * 5), log),
                              watch_history(users, _ms([999] * 5), changed))


@pytest.fixture
def featurizer() -> Featurizer:
    frame = pd.DataFrame({
        "video_id": [1, 1, 2, 2, 3, 3], "v_creator_id": [7, 7, 8, 8, 7, 7],
        "v_topic_id": [0, 0, 1, 1, 1, 1], "views": [1.0, 2, 3, 4, 5, 6],
        HISTORY_COLUMN: [[], [1], [1], [2, 1], [], [3]]})
    return Featurizer.fit(frame, ["video_id", "v_creator_id", "v_topic_id"], ["views"],
                          history_len=3)


def test_history_is_encoded_in_the_candidates_vocabularies(featurizer: Featurizer) -> None:
    frame = pd.DataFrame({"video_id": [2, 3], "v_creator_id": [8, 7], "v_topic_id": [1, 1]})
    cat, _ = featurizer.encode(frame)
    hist = featurizer.encode_history([2, 3, 99], 2)
    assert hist.shape == (2, 3, 3)
    assert (hist[0, 0] == cat[0]).all() and (hist[0, 1] == cat[1]).all(), \
        "a watched video is described like the same video as a candidate"
    assert hist[0, 2].tolist() == [0, 0, 0], "an unknown watched video is unknown, not padding"
    per_row = featurizer.encode_history(pd.Series([[2, 3, 99], [2, 3, 99]]), 2)
    assert np.array_equal(hist, per_row), "one list for all rows == the list on every row"
    short = featurizer.encode_history(pd.Series([[], [3]]), 2)
    assert (short[0] == PAD).all() and (short[1, 1:] == PAD).all() and (short[1, 0] >= 0).all()
    again = Featurizer.from_dict(featurizer.to_dict())
    assert np.array_equal(again.encode_history([2, 3], 1), featurizer.encode_history([2, 3], 1))
    off = Featurizer.fit(pd.DataFrame({"video_id": [1, 1]}), ["video_id"], [])
    assert off.history_len == 0, "no history column: no history input"


def test_attention_reads_only_the_real_history(featurizer: Featurizer) -> None:
    torch.manual_seed(0)
    cfg = RankerConfig(tasks=("click",), cardinalities=featurizer.cardinalities, n_numeric=1,
                       history_len=3, history_fields=(0, 1, 2))
    model = Ranker(cfg).eval()
    cat = torch.tensor([[2, 2, 2]])
    num = torch.zeros(1, 1)
    empty = torch.full((1, 3, 3), PAD)
    with torch.no_grad():
        none, blank = model(cat, num), model(cat, num, empty)
        one = torch.from_numpy(featurizer.encode_history([1], 1))
        two = torch.from_numpy(featurizer.encode_history([1, 3], 1))
        assert torch.allclose(none, blank), "no history == an all-padding history"
        assert not torch.allclose(model(cat, num, one), blank)
        assert not torch.allclose(model(cat, num, one), model(cat, num, two))
        # Padding positions never matter, whatever their other fields hold.
        noisy = one.clone()
        noisy[0, 1:, 1:] = 1
        assert torch.allclose(model(cat, num, one), model(cat, num, noisy))
