"""Supervised contrastive loss and the short fine-tune used in section 1.3."""
import numpy as np
import pytest
import torch

from embedlessons.losses import supervised_contrastive
from embedlessons.training import balanced_batches, fine_tune_on_labels


def _supcon_by_loops(z, labels, t):
    """Khosla et al. (2020) Eq. 2, written with explicit loops as a reference."""
    z = torch.nn.functional.normalize(z, dim=-1)
    losses = []
    for i in range(len(z)):
        pos = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / t) for a in range(len(z)) if a != i)
        losses.append(-sum(torch.log(torch.exp(z[i] @ z[p] / t) / denom) for p in pos) / len(pos))
    return torch.stack(losses).mean()


def test_supcon_equals_loop_reference_and_gradcheck():
    torch.manual_seed(0)
    z = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])  # label 2 has no positive: skipped
    torch.testing.assert_close(supervised_contrastive(z, labels, 0.1), _supcon_by_loops(z, labels, 0.1))
    assert torch.autograd.gradcheck(lambda x: supervised_contrastive(x, labels, 0.5), (z,))


def test_supcon_prefers_clustered_embeddings():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    swapped = clustered[[0, 2, 1, 3]]
    assert supervised_contrastive(clustered, labels) < supervised_contrastive(swapped, labels)


def test_supcon_bad_input():
    with pytest.raises(ValueError, match=r"embeddings \[B, d\] and labels \[B\]"):
        supervised_contrastive(torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        supervised_contrastive(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), 0.0)
    with pytest.raises(ValueError, match="no anchor in the batch has a positive"):
        supervised_contrastive(torch.randn(3, 3), torch.tensor([0, 1, 2]))


def test_balanced_batches():
    labels = np.repeat([0, 1, 2, 3], 10)
    batches = balanced_batches(labels, 8, steps=3, seed=1)
    assert len(batches) == 3
    for b in batches:
        assert np.bincount(labels[b]).tolist() == [2, 2, 2, 2]
    assert [b.tolist() for b in batches] == [b.tolist() for b in balanced_batches(labels, 8, 3, seed=1)]
    with pytest.raises(ValueError, match="multiple of the number of classes"):
        balanced_batches(labels, 6, 1)


def test_fine_tune_lowers_the_loss_deterministically():
    from embedlessons.models import small_bert

    texts = [f"sports match {i} goal" for i in range(8)] + [f"stock market {i} shares" for i in range(8)]
    labels = np.repeat([0, 1], 8)
    losses = fine_tune_on_labels(small_bert(seed=0), texts, labels, steps=8, batch_size=8, lr=1e-3,
                                 temperature=0.1, progress=False)
    again = fine_tune_on_labels(small_bert(seed=0), texts, labels, steps=8, batch_size=8, lr=1e-3,
                                temperature=0.1, progress=False)
    assert losses == pytest.approx(again, rel=1e-5)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1
    with pytest.raises(ValueError, match="16 texts but 3 labels"):
        fine_tune_on_labels(small_bert(), texts, labels[:3])
