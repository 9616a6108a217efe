"""The towers: unknown ids fall back to learned OOV rows, outputs are unit vectors, content
reaches the item vector, and nothing about an unseen item raises."""

from __future__ import annotations

import pytest
import torch

from models.content import ContentProjection
from models.embeddings import IdEmbedding, masked_mean
from models.two_tower import ItemInputs, TwoTower, TwoTowerConfig, UserInputs


def items(ids: list[int], content: torch.Tensor | None = None) -> ItemInputs:
    n = len(ids)
    return ItemInputs(
        item_id=torch.tensor(ids), author_id=torch.full((n,), 7), tags=torch.full((n, 3), -1),
        numeric=torch.zeros(n, TwoTowerConfig.item_numeric_dim), content=content,
    )


def users(ids: list[int], history: list[list[int]]) -> UserInputs:
    h = torch.tensor(history)
    return UserInputs(user_id=torch.tensor(ids), history=h, long=h >= 0, liked=torch.zeros_like(h,
                      dtype=torch.bool), features=torch.zeros(len(ids), 3))


def test_unknown_ids_use_oov_rows_and_padding_is_zero() -> None:
    emb = IdEmbedding([10, 20, 30], dim=4, oov_buckets=8)
    rows = emb.index(torch.tensor([-1, 10, 30, 99, 2**62, -(2**40) + 1]))
    assert rows[0] == 0 and rows[1] == 9 and rows[2] == 11  # padding; known ids after the OOV rows
    assert ((rows[3:5] >= 1) & (rows[3:5] <= 8)).all()  # huge and unseen ids: an OOV bucket
    assert rows[5] == 0  # any negative id is padding
    out = emb(torch.tensor([-1, 99]))
    assert torch.equal(out[0], torch.zeros(4)) and out[1].abs().sum() > 0


def test_without_oov_rows_unknown_and_dropped_ids_embed_to_zeros() -> None:
    emb = IdEmbedding([10, 20], dim=4, oov_buckets=0)
    assert emb.table.num_embeddings == 3  # padding and the two known ids
    out = emb(torch.tensor([10, 20, 99, -1]))
    assert (out[:2].abs().sum(-1) > 0).all() and torch.equal(out[2:], torch.zeros(2, 4))
    emb.train()
    assert (emb.index(torch.tensor([10] * 200), id_dropout=0.5) == 0).sum() > 50
    with pytest.raises(ValueError, match="0 or more"):
        IdEmbedding([1], dim=4, oov_buckets=-1)


def test_id_dropout_only_in_training() -> None:
    emb = IdEmbedding(list(range(100)), dim=4, oov_buckets=4)
    ids = torch.arange(100)
    emb.train()
    assert (emb.index(ids, id_dropout=0.5) <= 4).sum() > 20
    emb.eval()
    assert (emb.index(ids, id_dropout=0.5) > 4).all()


def test_masked_mean_ignores_padding() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(x, torch.tensor([[False, False, False]])).item() == 0.0


def test_two_tower_scores_unit_vectors_and_handles_cold_items() -> None:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=8, hidden=16, content_dim=5, user_feature_dim=3)
    model = TwoTower(cfg, user_ids=torch.tensor([1, 2]), item_ids=torch.tensor([10, 11, 12]))
    model.eval()
    content = torch.randn(4, 5)
    v = model.item(items([10, 11, 12, 123456789], content))  # the last one never seen
    u = model.user(users([1, 999], [[-1, 10, 11], [-1, -1, -1]]))  # unknown user, no history
    assert v.shape == (4, 8) and u.shape == (2, 8)
    assert torch.allclose(v.norm(dim=1), torch.ones(4)) and torch.allclose(u.norm(dim=1),
                                                                           torch.ones(2))
    # Two unseen items share the OOV bucket only if they hash alike; content tells them apart.
    other = model.item(items([123456789], torch.randn(1, 5)))
    assert not torch.allclose(v[3], other[0])
    scores = model(users([1], [[10, 11, 12]]), items([10, 11], content[:2]))
    assert scores.shape == (1, 2)


def test_id_only_item_tower_ignores_content() -> None:
    cfg = TwoTowerConfig(dim=8, hidden=16, item_features=False, content_dim=5)
    model = TwoTower(cfg, user_ids=torch.tensor([1]), item_ids=torch.tensor([10]))
    model.eval()
    a = model.item(items([10], torch.randn(1, 5)))
    b = model.item(items([10], torch.randn(1, 5)))
    assert torch.allclose(a, b)


def test_content_projection_gives_missing_content_its_own_vector() -> None:
    proj = ContentProjection(4, 3)
    with torch.no_grad():
        proj.missing.fill_(0.5)
    out = proj(torch.tensor([[0.0, 0, 0, 0], [1.0, 2, 3, 4]]))
    assert torch.equal(out[0], torch.full((3,), 0.5)) and not torch.equal(out[1], out[0])


def test_content_residual_places_an_unseen_item_by_its_content() -> None:
    """With ``content_residual``, before any training, an item nobody has watched scores
    higher for a user whose history has its topic's content than one of another topic; the
    history's content travels with the model's state (what a loaded bundle serves with)."""
    torch.manual_seed(0)
    topics = torch.nn.functional.normalize(torch.randn(2, 32), dim=1) * 6
    known = torch.tensor([10, 11, 12, 13])
    content = torch.stack([topics[0], topics[0], topics[1], topics[1]])
    cfg = TwoTowerConfig(dim=16, hidden=32, content_dim=32, content_residual=True)
    model = TwoTower(cfg, user_ids=torch.tensor([1, 2]), item_ids=known, item_content=content)
    model.eval()
    unseen = items([900, 901], topics)  # never trained on: OOV id rows, content only
    fans = users([1, 2], [[-1, 10, 11], [-1, 12, 13]])  # topic 0, topic 1
    scores = model(fans, unseen)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    plain = TwoTower(TwoTowerConfig(dim=16, hidden=32, content_dim=32), torch.tensor([1, 2]),
                     known)
    assert not any("history_content" in k for k in plain.state_dict())
    loaded = TwoTower(cfg, user_ids=torch.tensor([1, 2]), item_ids=known)  # no content given
    loaded.load_state_dict(model.state_dict())
    loaded.eval()
    assert torch.allclose(loaded(fans, unseen), scores)
