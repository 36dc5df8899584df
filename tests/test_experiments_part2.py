"""Tests of embedlessons.experiments.part2 (Part 2's small experiments)."""
import math

import numpy as np
import pytest
import torch

from embedlessons.experiments import part2
from embedlessons.losses import in_batch_info_nce


class FakeModel:
    """encode() returns fixed vectors looked up by text (no transformer needed)."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts, **kwargs):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def test_pair_cosines_matching_and_deranged():
    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in range(50)]
    vecs = {t: rng.normal(size=8) for t in texts}
    model = FakeModel(vecs)
    pos, neg = part2.pair_cosines(model, texts, texts, seed=3)
    np.testing.assert_allclose(pos, 1.0, atol=1e-5)            # a text with itself
    assert np.all(neg < 0.999)                                  # never paired with itself
    assert abs(neg.mean()) < 0.2                                # random Gaussian directions
    pos2, neg2 = part2.pair_cosines(model, texts, texts, seed=3)
    np.testing.assert_array_equal(neg, neg2)                    # seeded
    with pytest.raises(ValueError, match="anchors"):
        part2.pair_cosines(model, texts, texts[:3])


def test_pair_retrieval_accuracy_directions():
    # anchors a_i = e_i; positive p_i = e_i + e_0 for i > 0: from the anchors every positive is found, but
    # from the positives the anchor e_0 is tied/closer for all rows, so the reverse direction fails
    d = 6
    eye = np.eye(d)
    anchors = [f"a{i}" for i in range(d)] + ["dup", "dup"]
    positives = [f"p{i}" for i in range(d)] + ["x", "y"]
    table = {f"a{i}": eye[i] for i in range(d)}
    table.update({f"p{i}": (eye[i] + 1.5 * eye[0]) / np.linalg.norm(eye[i] + 1.5 * eye[0]) for i in range(d)})
    table.update({"dup": eye[0], "x": eye[0], "y": eye[0]})
    out = part2.pair_retrieval_accuracy(FakeModel(table), anchors, positives)
    assert out["pairs"] == d                                    # the repeated anchor's rows are dropped
    assert out["anchor->positive"] == 1.0
    assert out["positive->anchor"] == pytest.approx(1 / d)      # every positive is closest to anchor 0


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 60)
    pos[:3] = neg[:3]                                           # some ties
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert part2.auc(pos, neg) == pytest.approx(brute, abs=1e-12)
    assert part2.auc([2, 3], [0, 1]) == 1.0 and part2.auc([0, 1], [2, 3]) == 0.0
    with pytest.raises(ValueError):
        part2.auc([], [1.0])


def test_accumulated_loss_is_not_the_big_batch_loss():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
    p = a + 2.0 * p                                             # positives related to their anchors
    full = in_batch_info_nce(a, p, temperature=0.05).loss
    assert part2.accumulated_in_batch_loss(a, p, 64).item() == pytest.approx(full.item(), rel=1e-6)
    acc = part2.accumulated_in_batch_loss(a, p, 16)
    chunks = torch.stack([in_batch_info_nce(a[s:s + 16], p[s:s + 16], temperature=0.05).loss
                          for s in range(0, 64, 16)]).mean()
    assert acc.item() == pytest.approx(chunks.item(), rel=1e-6)
    assert acc.item() < full.item() - 1.0                       # fewer negatives: an easier task
    with pytest.raises(ValueError, match="divide"):
        part2.accumulated_in_batch_loss(a, p, 10)


class Rows:
    columns = 2

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_duplicate_rows_and_counts():
    ds = Rows([("a", "b"), ("c", "d"), ("a", "e"), ("f", "d"), ("g", "g")])
    assert part2.duplicate_rows(ds, [0, 1, 2, 3]) == [(0, 2, "a"), (1, 3, "d")]
    assert part2.duplicate_rows(ds, [0, 1, 4]) == []           # a text repeated inside one row is fine
    from embedlessons.training import count_duplicate_batches
    batches = [[0, 2], [0, 1], [1, 3], [4, 0]]
    assert [bool(part2.duplicate_rows(ds, b)) for b in batches] == [True, False, True, False]
    assert count_duplicate_batches(ds, batches) == 2             # the trainer's count agrees
    assert part2.sequential_batches(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    batches = part2.random_batches(10, 4, epochs=2, seed=0)
    assert len(batches) == 4 and all(len(set(b)) == 4 for b in batches)
    assert batches == part2.random_batches(10, 4, epochs=2, seed=0)


def test_softmax_entropy_limits():
    scores = torch.tensor([[0.9, 0.5, 0.1, 0.0]])
    assert part2.softmax_entropy(scores, 1e3).item() == pytest.approx(math.log(4), abs=1e-3)
    assert part2.softmax_entropy(scores, 1e-3).item() == pytest.approx(0.0, abs=1e-6)
    ent = [part2.softmax_entropy(scores, t).item() for t in (0.01, 0.05, 0.1, 1.0)]
    assert ent == sorted(ent)                                   # hotter is flatter
    with pytest.raises(ValueError):
        part2.softmax_entropy(scores, 0.0)


def test_hardest_negative_share():
    sims = torch.tensor([[0.9, 0.6, 0.2, 0.1],
                         [0.3, 0.8, 0.3, 0.1],
                         [0.0, 0.0, 0.7, 0.5],
                         [0.2, 0.1, 0.0, 0.9]])
    hot, cold = part2.hardest_negative_share(sims, 10.0), part2.hardest_negative_share(sims, 0.01)
    assert torch.all(hot < 0.36) and torch.all(hot >= 1 / 3)    # near uniform over 3 negatives
    assert cold[0].item() == pytest.approx(1.0, abs=1e-6)       # all weight on the hardest
    assert cold[1].item() == pytest.approx(0.5, abs=1e-6)       # a tie: top-1 share is 1/2, ...
    assert part2.hardest_negative_share(sims, 0.01, top=2)[1].item() == pytest.approx(1.0, abs=1e-6)  # ... top-2: 1
    with pytest.raises(ValueError):
        part2.hardest_negative_share(sims[:3], 0.1)


def test_snli_pairs_and_model():
    dev, test = part2.snli_pairs("snli_dev"), part2.snli_pairs("snli_test")
    assert (len(dev), len(test)) == (3329, 3368)
    with pytest.raises(ValueError, match="split"):
        part2.snli_pairs("train")
    m1, m2 = part2.sweep_model(0), part2.sweep_model(0)
    assert m1.fingerprint() == m2.fingerprint() != part2.sweep_model(1).fingerprint()
    with pytest.raises(ValueError, match="unknown"):
        part2.sweep_model(0, layers=3)


def test_train_small_runs_and_learns():
    dev = part2.snli_pairs("snli_dev")
    run = part2.train_small(steps=30, batch_size=16, evaluator=None, cache=False, keep_model=True,
                             num_layers=1, hidden_size=32, intermediate_size=64)
    assert len(run.history.steps) == 30 and run.settings["examples"] == 480
    first = np.mean(run.history.losses[:5])
    last = np.mean(run.history.losses[-5:])
    assert last < first - 0.15                                  # the loss falls on real pairs
    pos, neg = part2.pair_cosines(run.model, dev.anchors[:200], dev.positives[:200])
    assert pos.mean() > neg.mean()


class HashModel:
    """encode() gives each text a fixed pseudo-random vector plus a shared direction for its first word."""

    def encode(self, texts, **kwargs):
        import zlib
        out = []
        for t in texts:
            v = np.random.default_rng(zlib.crc32(t.encode())).normal(size=16)
            v[0] += 3.0 * np.random.default_rng(zlib.crc32(t.split()[0].lower().encode())).normal()
            out.append(v)
        return np.stack(out).astype(np.float32)


def test_sts_cosines_give_the_evaluators_spearman():
    from embedlessons.evaluation import spearman
    cos, gold = part2.sts_cosines(HashModel())
    assert cos.shape == gold.shape == (1379,)                   # STS-B test
    assert np.all(np.abs(cos) <= 1 + 1e-6)
    assert spearman(cos, gold) == pytest.approx(part2.stsb_evaluator()(HashModel())["stsb_spearman"], abs=1e-9)


def test_train_seeds_pairs_settings_by_seed():
    tiny = dict(steps=4, batch_size=8, evaluator=None, cache=False, num_layers=1, hidden_size=32, intermediate_size=64)
    runs = part2.train_seeds((0, 1), label="one-way", **tiny)
    assert list(runs) == [0, 1] and runs[1].label == "one-way, seed 1"
    assert all(r.settings["seed"] == r.settings["model_seed"] == s for s, r in runs.items())
    assert runs[0].history.losses != runs[1].history.losses     # another seed: other weights and batches
    again = part2.train_small(seed=1, model_seed=1, **tiny)
    assert again.history.losses == pytest.approx(runs[1].history.losses)   # the same seed: the same run
    short = part2.train_small(max_length=8, **tiny)
    assert short.settings["max_length"] == 8 and runs[0].settings["max_length"] == part2.SWEEP_MAX_LENGTH
    assert short.history.losses != runs[0].history.losses      # truncated texts: another run
    assert part2.spearmans({0: part2.SweepRun("a", {}, None, {"stsb_spearman": 0.4})}) == {0: 0.4}
    with pytest.raises(ValueError, match="at least 2 distinct"):
        part2.train_seeds((0,), **tiny)
    with pytest.raises(ValueError, match="do not pass"):
        part2.train_seeds((0, 1), seed=3, **tiny)


def test_shared_bottom_equals_a_full_encode_of_each_fine_tune():
    """A 3-layer random BERT fine-tuned with TrainTopLayers(2) from a shared start: SharedBottom's cosines (top
    layers only) equal sts_cosines' full forward pass, before and after training; a model whose lower layer
    moved is refused."""
    import functools

    from embedlessons.experiments.part3 import TrainTopLayers
    from embedlessons.models import small_bert
    from embedlessons.training import TrainConfig, train

    torch.set_num_threads(1)
    start = small_bert(num_layers=3, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    bottom = part2.SharedBottom(start, top_layers=2, max_length=32)
    cos, gold = part2.sts_cosines(start, max_length=32)
    np.testing.assert_allclose(bottom.start_cosines, cos, atol=1e-5)
    np.testing.assert_array_equal(bottom.gold, gold)
    np.testing.assert_allclose(bottom.cosines(start), cos, atol=1e-5)

    tuned = small_bert(num_layers=3, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    data = part2.snli_pairs("snli_dev")
    train(tuned, data, functools.partial(in_batch_info_nce, temperature=0.05),
          TrainConfig(steps=3, batch_size=16, lr=1e-2, max_length=16), callbacks=[TrainTopLayers(2)],
          cache=False, progress=False)
    after, _ = part2.sts_cosines(tuned, max_length=32)
    assert np.abs(after - cos).max() > 1e-3                    # training changed the model
    np.testing.assert_allclose(bottom.cosines(tuned), after, atol=1e-5)

    with torch.no_grad():
        tuned.transformer.encoder.layer[0].output.dense.bias.add_(0.1)
    with pytest.raises(ValueError, match="lower 1 layers differ"):
        bottom.cosines(tuned)
    with pytest.raises(ValueError, match="top_layers must be in 1..3"):
        part2.SharedBottom(start, top_layers=4)
