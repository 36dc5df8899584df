"""The contrastive trainer of section 2.5: datasets, dynamic padding, the no-duplicates sampler, the schedule,
clipping, determinism, checkpoints that sentence-transformers loads, the run cache, callbacks and errors."""
import functools
import math

import numpy as np
import pytest
import torch

from embedlessons.data import load_nli_pairs, load_retrieval, load_sts
from embedlessons.losses import LossOutput, cosent_loss, in_batch_info_nce, info_nce
from embedlessons.models import load_model, small_bert
from embedlessons.training import (NoDuplicatesBatchSampler, NonFiniteLossError, PairDataset, RandomBatchSampler,
                                   ScoredPairDataset, TrainConfig, TrainHistory, TripletDataset, collate,
                                   count_duplicate_batches, linear_warmup_decay, make_optimizer, make_scheduler,
                                   pairs_from_nli, pairs_from_retrieval, run_dir, run_key, scored_pairs_from_sts,
                                   train)

LOSS = functools.partial(in_batch_info_nce, temperature=0.05)


def tiny(seed: int = 0):
    """A 1-layer, 64-wide BERT with MiniLM's tokenizer: a training step takes milliseconds."""
    return small_bert(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=128, seed=seed)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=8, lr=1e-3, max_length=16)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def scifact_pairs():
    return pairs_from_retrieval(load_retrieval("scifact", "train"))


@pytest.fixture(scope="module")
def snli():
    return load_nli_pairs("snli")


pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")   # tests/conftest.py


# ------------------------------------------------------------------------------------------ datasets
def test_datasets_items_columns_and_fingerprints():
    pairs = PairDataset(["a", "b"], ["pa", "pb"])
    assert (len(pairs), pairs.columns, pairs[1]) == (2, 2, ("b", "pb"))
    one = TripletDataset(["a", "b"], ["pa", "pb"], ["na", "nb"])
    assert (one.columns, one.k, one.stack_negatives, one[0]) == (3, 1, False, ("a", "pa", "na"))
    many = TripletDataset(["a", "b"], ["pa", "pb"], [["n1", "n2", "n3"], ["m1", "m2", "m3"]])
    assert (many.columns, many.k, many.stack_negatives, many[1]) == (5, 3, True, ("b", "pb", "m1", "m2", "m3"))
    scored = ScoredPairDataset(["a", "b"], ["c", "d"], [0.25, 1.0])
    assert scored[0] == ("a", "c", 0.25) and scored.columns == 2

    before = many.fingerprint()
    assert TripletDataset(["a", "b"], ["pa", "pb"], [["n1", "n2", "n3"], ["m1", "m2", "m3"]]).fingerprint() == before
    many.set_negatives([1], [["x1", "x2", "x3"]])
    assert many[1] == ("b", "pb", "x1", "x2", "x3") and many.fingerprint() != before
    one.set_negatives([0], ["new"])
    assert one[0] == ("a", "pa", "new")
    assert PairDataset(["a"], ["b"]).fingerprint() != PairDataset(["b"], ["a"]).fingerprint()


def test_dataset_errors():
    with pytest.raises(ValueError, match="2 anchors but 1 positives"):
        PairDataset(["a", "b"], ["p"])
    with pytest.raises(TypeError, match="positives\\[1\\] must be a string"):
        PairDataset(["a", "b"], ["p", 3])
    with pytest.raises(ValueError, match="same number of negatives"):
        TripletDataset(["a", "b"], ["p", "q"], [["n1", "n2"], ["m1"]])
    many = TripletDataset(["a"], ["p"], [["n1", "n2"]])
    with pytest.raises(ValueError, match="2 per row"):
        many.set_negatives([0], [["only one"]])
    with pytest.raises(IndexError):
        many.set_negatives([5], [["x", "y"]])
    with pytest.raises(ValueError, match="NaN"):
        ScoredPairDataset(["a"], ["b"], [float("nan")])


def test_builders_on_real_data(scifact_pairs, snli):
    ds = load_retrieval("scifact", "train")
    n_pairs = sum(rel >= 1 for rels in ds.qrels.values() for rel in rels.values())
    assert len(scifact_pairs) == n_pairs == 919
    qid = next(iter(ds.queries))
    doc = ds.corpus[next(iter(ds.qrels[qid]))]
    assert scifact_pairs[0] == (ds.queries[qid], doc["title"] + " " + doc["text"])

    entail = pairs_from_nli(snli)
    assert len(entail) == snli.labels.count("entailment") == 6697
    sts = scored_pairs_from_sts(load_sts("stsb", "train"))
    assert sts.scores.min() == 0.0 and sts.scores.max() == 1.0
    np.testing.assert_allclose(sts.scores, load_sts("stsb", "train").scores / 5, atol=1e-6)
    sick = scored_pairs_from_sts(load_sts("sick", "train"))      # SICK is scored 1..5
    assert sick.scores.min() == 0.0 and sick.scores.max() == 1.0


# ------------------------------------------------------------------------------------------ collation
def test_collate_pads_to_the_longest_text_of_the_batch_not_to_max_length():
    model = tiny()
    items = [("short query", "a somewhat longer positive text with more words in it"),
             ("another query here", "tiny")]
    features, scores = collate(model, items, max_length=64)
    assert scores is None and len(features) == 2
    n_tokens = [len(model.tokenizer(t)["input_ids"]) for t in ("another query here",
                                                                 "a somewhat longer positive text with more words in it")]
    assert features[0]["input_ids"].shape == (2, n_tokens[0]) and n_tokens[0] < 64     # longest anchor
    assert features[1]["input_ids"].shape == (2, n_tokens[1]) and n_tokens[1] < 64     # longest positive
    assert features[1]["attention_mask"][1].sum() == 3                                  # [CLS] tiny [SEP]

    # per-column limits truncate each column to its own limit; a score column becomes a float tensor
    features, scores = collate(model, [("one two three four five six seven eight", "x y z", 0.5),
                                       ("a", "b", 1.0)], max_length=(4, 16))
    assert features[0]["input_ids"].shape == (2, 4) and features[1]["input_ids"].shape == (2, 5)
    assert scores.dtype == torch.float32 and scores.tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="3 entries but items have 2"):
        collate(model, items, max_length=(8, 8, 8))
    with pytest.raises(ValueError, match="at least one item"):
        collate(model, [], max_length=8)


# ------------------------------------------------------------------------------------------ sampler
def test_no_duplicates_sampler_on_snli(snli):
    """SNLI repeats premises (several hypotheses each): a plain shuffle puts the same premise twice in some
    batches, i.e. a false in-batch negative; the no-duplicates sampler never does."""
    entail = pairs_from_nli(snli)                                      # 6,697 pairs, 6,162 distinct premises
    every_label = PairDataset(snli.premises, snli.hypotheses)         # ~3 rows per premise
    for ds, naive_min in [(entail, 3), (every_label, 20)]:         # measured: 6 and 36 batches
        naive = list(RandomBatchSampler(ds, 32, seed=0))
        clean = list(NoDuplicatesBatchSampler(ds, 32, seed=0))
        assert count_duplicate_batches(ds, naive) >= naive_min
        assert count_duplicate_batches(ds, clean) == 0
        assert all(len(b) == 32 for b in clean)
        used = [i for b in clean for i in b]
        assert len(used) == len(set(used))                            # each row at most once per epoch
        assert len(clean) >= 0.95 * (len(ds) // 32)                  # few rows are left over


def test_sampler_is_deterministic_per_seed_and_epoch(scifact_pairs):
    a = list(NoDuplicatesBatchSampler(scifact_pairs, 16, seed=3))
    b = list(NoDuplicatesBatchSampler(scifact_pairs, 16, seed=3))
    c = list(NoDuplicatesBatchSampler(scifact_pairs, 16, seed=4))
    sampler = NoDuplicatesBatchSampler(scifact_pairs, 16, seed=3)
    sampler.set_epoch(1)
    assert a == b and a != c and list(sampler) != a


def test_sampler_errors():
    same_anchor = PairDataset(["q"] * 10, [f"p{i}" for i in range(10)])
    with pytest.raises(ValueError, match="cannot fill a batch of 4 rows without a repeated text"):
        list(NoDuplicatesBatchSampler(same_anchor, 4))
    with pytest.raises(ValueError, match="batch_size 16 is larger than the dataset \\(10 rows\\)"):
        NoDuplicatesBatchSampler(same_anchor, 16)
    # a text repeated inside one row (SimCSE-style (x, x) pairs) is fine
    simcse = PairDataset([f"t{i}" for i in range(8)], [f"t{i}" for i in range(8)])
    assert len(list(NoDuplicatesBatchSampler(simcse, 4))) == 2


# ------------------------------------------------------------------------------------------ optimiser, schedule
def test_linear_warmup_decay_values_and_equal_to_transformers():
    from transformers import get_linear_schedule_with_warmup

    total, warmup = 100, 10
    assert [linear_warmup_decay(s, total, warmup) for s in (0, 5, 10, 55, 100, 120)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    p = torch.nn.Parameter(torch.zeros(1))
    ours = make_scheduler(torch.optim.SGD([p], lr=0.1), total, warmup)
    ref = get_linear_schedule_with_warmup(torch.optim.SGD([p], lr=0.1), warmup, total)
    for _ in range(total):
        assert ours.get_last_lr() == pytest.approx(ref.get_last_lr(), abs=1e-12)
        ours.optimizer.step(); ours.step(); ref.optimizer.step(); ref.step()


def test_lr_recorded_per_step_follows_the_schedule(scifact_pairs):
    hist = train(tiny(), scifact_pairs, LOSS, cfg(steps=10, warmup_ratio=0.2, lr=1e-3), progress=False)
    lrs = [r["lr"] for r in hist.steps]
    expected = [1e-3 * linear_warmup_decay(s, 10, 2) for s in range(10)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3)


def test_no_weight_decay_on_biases_and_layernorm():
    model = tiny()
    opt = make_optimizer(list(model.named_parameters()), lr=1e-3, weight_decay=0.01)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim == 2 for p in decay["params"])
    n_ln = sum("LayerNorm" in n for n, _ in model.named_parameters())
    assert n_ln > 0 and len(no_decay["params"]) >= n_ln


def test_gradient_clipping_bounds_the_gradient_norm(scifact_pairs):
    class GradNorm:
        """After the optimiser step the (clipped) gradients are still in .grad: measure them."""

        def __init__(self):
            self.norms = []

        def on_step_end(self, state):
            grads = [p.grad for p in state.model.parameters() if p.grad is not None]
            self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    probe = GradNorm()
    hist = train(tiny(), scifact_pairs, LOSS, cfg(max_grad_norm=0.05), callbacks=[probe], progress=False)
    raw = [r["grad_norm"] for r in hist.steps]
    assert min(raw) > 0.05                                 # clipping was active on every step...
    assert max(probe.norms) <= 0.05 * (1 + 1e-4)           # ... and bounded the applied gradient
    probe = GradNorm()
    hist = train(tiny(), scifact_pairs, LOSS, cfg(max_grad_norm=None), callbacks=[probe], progress=False)
    assert probe.norms == pytest.approx([r["grad_norm"] for r in hist.steps], rel=1e-4)  # no clipping
    assert max(probe.norms) > 0.05


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_losses_different_seed_different(scifact_pairs):
    models = [tiny() for _ in range(3)]
    torch.manual_seed(123)
    outside = torch.rand(1)
    torch.manual_seed(123)
    runs = [train(m, scifact_pairs, LOSS, cfg(seed=s), progress=False).losses for m, s in zip(models, (0, 0, 1))]
    assert torch.rand(1) == outside                         # the caller's random state is left alone
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)
    assert np.max(np.abs(np.array(runs[0]) - np.array(runs[2]))) > 1e-3


def test_training_lowers_the_loss_and_records_stats(scifact_pairs):
    hist = train(tiny(), scifact_pairs, LOSS, cfg(steps=20, batch_size=16, lr=2e-3, warmup_ratio=0.1),
                 progress=False)
    assert np.mean(hist.losses[-5:]) < np.mean(hist.losses[:5]) - 0.3       # measured: 2.67 -> 1.95
    assert {"step", "loss", "lr", "grad_norm", "accuracy", "pos_sim", "neg_sim"} <= set(hist.steps[0])
    assert [r["step"] for r in hist.steps] == list(range(1, 21))


def test_k_negatives_arrive_stacked_and_scores_arrive_last():
    seen = []

    def spy(*tensors):
        seen.append([tuple(t.shape) for t in tensors])
        return info_nce(*tensors) if len(tensors) == 3 and tensors[2].dim() == 3 else in_batch_info_nce(*tensors[:2])

    k3 = TripletDataset([f"a{i}" for i in range(8)], [f"p{i}" for i in range(8)],
                        [[f"n{i}{j}" for j in range(3)] for i in range(8)])
    train(tiny(), k3, spy, cfg(steps=1, batch_size=4), progress=False)
    k1 = TripletDataset([f"a{i}" for i in range(8)], [f"p{i}" for i in range(8)], [f"n{i}" for i in range(8)])
    train(tiny(), k1, spy, cfg(steps=1, batch_size=4), progress=False)
    assert seen == [[(4, 64), (4, 64), (4, 3, 64)], [(4, 64), (4, 64), (4, 64)]]

    sts = scored_pairs_from_sts(load_sts("stsb", "dev"))
    hist = train(tiny(), sts, cosent_loss, cfg(steps=2, batch_size=8), progress=False)
    assert len(hist.steps) == 2 and math.isfinite(hist.losses[-1])


def test_a_loss_module_with_parameters_is_trained(scifact_pairs):
    from embedlessons.losses import LearnableTemperature

    class LearnedTemperatureInfoNCE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature = LearnableTemperature(0.07)

        def forward(self, a, p):
            return in_batch_info_nce(a, p, temperature=self.temperature())

    loss = LearnedTemperatureInfoNCE()
    train(tiny(), scifact_pairs, loss, cfg(steps=3, lr=1e-2, warmup_ratio=0.0), progress=False)
    assert abs(loss.temperature().item() - 0.07) > 1e-4


# ------------------------------------------------------------------------------------------ evaluation, checkpoints
def test_evaluator_runs_every_eval_every_steps_and_at_the_end(scifact_pairs):
    calls = []

    def evaluator(model):
        calls.append(model.training)
        return {"score": float(len(calls))}

    hist = train(tiny(), scifact_pairs, LOSS, cfg(steps=5, eval_every=2), evaluator=evaluator, progress=False)
    assert [e["step"] for e in hist.evals] == [2, 4, 5]
    assert hist.final_eval == {"score": 3.0} and hist.values("score") == ([2, 4, 5], [1.0, 2.0, 3.0])


def test_checkpoints_load_in_sentence_transformers(tmp_path, scifact_pairs):
    from sentence_transformers import SentenceTransformer

    model = tiny()
    out = tmp_path / "run"
    hist = train(model, scifact_pairs, LOSS, cfg(steps=4, checkpoint_every=2, output_dir=str(out)), progress=False)
    assert {p.name for p in out.iterdir()} == {"checkpoint-2", "checkpoint-4", "final", "history.json"}
    texts = ["A claim about T cells.", "Aspirin lowers the risk of heart attack in some adults.", "x"]
    ours = model.encode(texts, cache=False, progress=False)
    st = SentenceTransformer(str(out / "final"), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)
    np.testing.assert_allclose(load_model(out / "checkpoint-4").encode(texts, cache=False, progress=False),
                               ours, atol=1e-6)
    assert not np.allclose(load_model(out / "checkpoint-2").encode(texts, cache=False, progress=False), ours,
                           atol=1e-4)
    assert TrainHistory.from_json(out / "history.json").steps == hist.steps


# ------------------------------------------------------------------------------------------ run cache
class CountingLoss:
    """In-batch InfoNCE that counts its calls; ``cache_key`` keeps the run-cache key stable."""

    cache_key = "counting-in-batch-info-nce-0.05"

    def __init__(self):
        self.calls = 0

    def __call__(self, a, p):
        self.calls += 1
        return in_batch_info_nce(a, p, temperature=0.05)


def test_run_cache_hit_restores_weights_and_history_without_training(scifact_pairs, monkeypatch):
    loss = CountingLoss()
    trained = tiny()
    first = train(trained, scifact_pairs, loss, cfg(), cache=True, progress=False)
    assert loss.calls == 4 and not first.from_cache
    key = run_key(tiny(), scifact_pairs, loss, cfg())
    assert (run_dir(key) / "model" / "model.safetensors").exists() and (run_dir(key) / "history.json").exists()

    fresh = tiny()
    again = train(fresh, scifact_pairs, loss, cfg(), cache=True, progress=False)
    assert loss.calls == 4 and again.from_cache                       # nothing was trained
    assert again.steps == first.steps and again.evals == first.evals
    assert fresh.fingerprint() == trained.fingerprint()
    assert not fresh.training

    train(tiny(), scifact_pairs, loss, cfg(lr=5e-4), cache=True, progress=False)    # another config: a miss
    assert loss.calls == 8
    monkeypatch.setenv("EMBEDLESSONS_NO_CACHE", "1")
    train(tiny(), scifact_pairs, loss, cfg(), cache=True, progress=False)            # cache turned off
    assert loss.calls == 12


def test_run_key_depends_on_model_data_loss_and_evaluator(scifact_pairs):
    small = PairDataset(scifact_pairs.anchors[:20], scifact_pairs.positives[:20])
    base = run_key(tiny(), small, LOSS, cfg())
    assert base == run_key(tiny(), small, functools.partial(in_batch_info_nce, temperature=0.05), cfg())
    assert base != run_key(tiny(seed=1), small, LOSS, cfg())
    assert base != run_key(tiny(), PairDataset(small.anchors[:19], small.positives[:19]), LOSS, cfg())
    assert base != run_key(tiny(), small, functools.partial(in_batch_info_nce, temperature=0.1), cfg())
    assert base != run_key(tiny(), small, LOSS, cfg(), evaluator=lambda m: {})
    assert base == run_key(tiny(), small, LOSS, cfg(output_dir="/elsewhere"))     # where files go: same run


# ------------------------------------------------------------------------------------------ callbacks
def test_callbacks_in_order_can_log_stop_and_mutate_the_dataset():
    class Recording(TripletDataset):
        def __init__(self, *args):
            super().__init__(*args)
            self.fetched = []

        def __getitem__(self, i):                     # what the trainer collates
            item = super().__getitem__(i)
            self.fetched.append(item)
            return item

        def texts(self, i):                           # what the sampler reads (not recorded)
            return TripletDataset.__getitem__(self, i)

    ds = Recording([f"a{i}" for i in range(8)], [f"p{i}" for i in range(8)], [f"n{i}" for i in range(8)])
    events = []

    class First:
        def on_train_begin(self, state):
            events.append(("first.begin", state.step))

        def on_step_begin(self, state):
            events.append(("first.step_begin", state.step))
            state.history.log(state.step, before=1.0)       # logged before the step record exists

        def on_step_end(self, state):
            events.append(("first.step_end", state.step))
            if state.step == 1:                              # a miner: new negatives for every row
                state.dataset.set_negatives(range(8), [f"mined{i}" for i in range(8)])
            state.history.log(state.step, after=2.0)
            state.stop = state.step == 3

        def on_train_end(self, state):
            events.append(("first.end", state.step))

    class Second:
        def on_step_end(self, state):
            events.append(("second.step_end", state.step))

    hist = train(tiny(), ds, lambda a, p, n: in_batch_info_nce(a, p, n), cfg(steps=5, batch_size=4),
                 callbacks=[First(), Second()], progress=False)
    assert events == [("first.begin", 0),
                      ("first.step_begin", 1), ("first.step_end", 1), ("second.step_end", 1),
                      ("first.step_begin", 2), ("first.step_end", 2), ("second.step_end", 2),
                      ("first.step_begin", 3), ("first.step_end", 3), ("second.step_end", 3),
                      ("first.end", 3)]
    assert len(hist.steps) == 3 and all(r["before"] == 1.0 and r["after"] == 2.0 for r in hist.steps)
    negatives = [item[2] for item in ds.fetched]
    assert all(n.startswith("n") for n in negatives[:4])              # step 1 used the original negatives
    assert all(n.startswith("mined") for n in negatives[4:])          # later steps the mined ones


# ------------------------------------------------------------------------------------------ history
def test_history_json_round_trip_and_plot(scifact_pairs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    hist = train(tiny(), scifact_pairs, LOSS, cfg(steps=3), evaluator=lambda m: {"m": 0.5}, progress=False)
    back = TrainHistory.from_json(hist.to_json())
    assert back.steps == hist.steps and back.evals == hist.evals and back.meta == hist.meta
    hist.to_json(tmp_path / "h.json")
    assert TrainHistory.from_json(tmp_path / "h.json").steps == hist.steps
    axes = hist.plot()
    assert len(axes) == 2 and axes[0].get_ylabel() == "training loss"
    assert len(TrainHistory(hist.steps).plot()) == 1


# ------------------------------------------------------------------------------------------ errors
def test_clear_errors(scifact_pairs):
    with pytest.raises(ValueError, match="empty"):
        train(tiny(), PairDataset([], []), LOSS, cfg(), progress=False)
    with pytest.raises(ValueError, match="batch_size 8 is larger than the dataset \\(3 rows\\)"):
        train(tiny(), PairDataset(["a", "b", "c"], ["d", "e", "f"]), LOSS, cfg(), progress=False)
    with pytest.raises(ValueError, match="cannot fill a batch"):
        train(tiny(), PairDataset(["q"] * 10, [f"p{i}" for i in range(10)]), LOSS, cfg(batch_size=4),
              progress=False)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="checkpoint_every needs an output_dir"):
        TrainConfig(steps=5, checkpoint_every=2)

    def nan_at_step_3():
        calls = {"n": 0}

        def loss(a, p):
            calls["n"] += 1
            out = in_batch_info_nce(a, p)
            return LossOutput(out.loss * float("nan"), {}) if calls["n"] == 3 else out
        return loss

    with pytest.raises(NonFiniteLossError, match="nan at step 3 of 4"):
        train(tiny(), scifact_pairs, nan_at_step_3(), cfg(), progress=False)
    with pytest.raises(TypeError, match="LossOutput"):
        train(tiny(), scifact_pairs, lambda a, p: 1.0, cfg(), progress=False)
