"""Multi-task training of Part 4: task samplers (expected vs realised mix), task weightings, the loss dispatch,
and a few steps of real multi-task training through the Part 2 trainer (one task per batch, checkpoints that
sentence-transformers loads, logged weights, the run cache), plus the error messages for bad input."""
import functools
import math

import numpy as np
import pytest
import torch

from embedlessons.data import load_classification, load_retrieval, load_sts
from embedlessons.losses import cosent_loss, in_batch_info_nce
from embedlessons.models import small_bert
from embedlessons.multitask import (DynamicWeightAverage, FixedWeights, LabelledTextDataset, LossRatioWeighting,
                                    MultiTaskLoss, Task, UncertaintyWeighting, labelled_texts, task_mix,
                                    task_probabilities, task_schedule, train_multitask)
from embedlessons.task_losses import PrototypeLoss
from embedlessons.training import (NoDuplicatesBatchSampler, PairDataset, ScoredPairDataset, TrainConfig,
                                   count_duplicate_batches, pairs_from_retrieval, scored_pairs_from_sts, train)

MNRL = functools.partial(in_batch_info_nce, temperature=0.05)


def tiny(seed: int = 0):
    return small_bert(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=128, seed=seed)


pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")   # tests/conftest.py


def _pairs(n, prefix="q"):
    return PairDataset([f"{prefix} anchor {i}" for i in range(n)], [f"{prefix} positive {i}" for i in range(n)])


# ------------------------------------------------------------------------------------------ samplers
def test_task_probabilities_of_each_sampler():
    sizes = [100, 400, 1600]
    np.testing.assert_allclose(task_probabilities(sizes, "uniform"), [1 / 3] * 3)
    np.testing.assert_allclose(task_probabilities(sizes, "round_robin"), [1 / 3] * 3)
    np.testing.assert_allclose(task_probabilities(sizes, "proportional"), np.array(sizes) / 2100)
    np.testing.assert_allclose(task_probabilities(sizes, "temperature", 1.0), np.array(sizes) / 2100)
    np.testing.assert_allclose(task_probabilities(sizes, "temperature", 2.0), np.array([10, 20, 40]) / 70)
    assert np.abs(task_probabilities(sizes, "temperature", 1e6) - 1 / 3).max() < 1e-5    # T -> inf: uniform
    sharp = task_probabilities(sizes, "temperature", 0.5)                               # T < 1: sharper
    assert sharp[2] > task_probabilities(sizes, "proportional")[2]
    np.testing.assert_allclose(task_probabilities(sizes, "proportional", max_size=400), [1 / 9, 4 / 9, 4 / 9])
    assert task_probabilities([10**9, 1], "temperature", 2.0).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("sampler, temperature", [("uniform", 2.0), ("proportional", 2.0), ("temperature", 3.0)])
def test_realised_mix_matches_expected_within_sampling_noise(sampler, temperature):
    sizes, steps = [50, 800, 3000], 4000
    p = task_probabilities(sizes, sampler, temperature)
    schedule = task_schedule(sizes, steps, sampler, temperature, seed=1)
    realised = np.bincount(schedule, minlength=3) / steps
    assert (np.abs(realised - p) < 4 * np.sqrt(p * (1 - p) / steps)).all()
    np.testing.assert_array_equal(schedule, task_schedule(sizes, steps, sampler, temperature, seed=1))
    assert not np.array_equal(schedule, task_schedule(sizes, steps, sampler, temperature, seed=2))
    mix = task_mix([["a", "b", "c"][i] for i in schedule], names=["a", "b", "c"])
    np.testing.assert_allclose(list(mix.values()), realised)


def test_round_robin_cycles_the_tasks():
    np.testing.assert_array_equal(task_schedule([5, 500], 5, "round_robin"), [0, 1, 0, 1, 0])
    assert task_mix(["b", "b", "a"], names=["a", "b", "c"]) == {"a": 1 / 3, "b": 2 / 3, "c": 0.0}


@pytest.mark.parametrize("call, message", [
    (lambda: task_probabilities([10, 20], "zipf"), r"unknown sampler 'zipf'; choose one of"),
    (lambda: task_probabilities([10, 20], "temperature", 0.0), r"sampler temperature must be a finite number > 0"),
    (lambda: task_probabilities([10, 20], "temperature", -1.0), r"sampler temperature must be a finite number > 0"),
    (lambda: task_probabilities([10, 20], "temperature", math.nan), r"sampler temperature must be a finite"),
    (lambda: task_probabilities([10, 0], "uniform"), r"task sizes must be integers >= 1 \(a task with an empty"),
    (lambda: task_probabilities([], "uniform"), r"need the size of at least one task"),
    (lambda: task_probabilities([10, 20], "proportional", max_size=0), r"max_size must be an int >= 1"),
    (lambda: task_schedule([10, 20], 0), r"steps must be a positive int"),
    (lambda: task_mix([]), r"no steps with a task"),
    (lambda: task_mix(["a", "z"], names=["a"]), r"steps of tasks \['z'\] that are not in names"),
])
def test_sampler_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------------------------------ tasks, datasets
def test_labelled_text_dataset_items_and_builder():
    ds = LabelledTextDataset(["a", "b", "c"], [0, 2, 1])
    assert ds[1] == ("b", 2.0) and ds.columns == 1 and ds.n_classes == 3 and ds.texts(0) == ("a",)
    assert ds.fingerprint() != LabelledTextDataset(["a", "b", "c"], [0, 1, 1]).fingerprint()
    ag = load_classification("ag_news", "train")
    sub = labelled_texts(ag, n=50, seed=0)
    assert len(sub) == 50 and sub.n_classes <= 4 and sub.fingerprint() == labelled_texts(ag, 50, 0).fingerprint()
    i = ag.texts.index(sub.all_texts[0])
    assert sub[0] == (ag.texts[i], float(ag.labels[i]))
    with pytest.raises(ValueError, match=r"need one label per text"):
        LabelledTextDataset(["a", "b"], [0])
    with pytest.raises(ValueError, match=r"labels must be integers >= 0"):
        LabelledTextDataset(["a", "b"], [0.5, 1.0])
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 5000\]"):
        labelled_texts(ag, n=0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name="sts", dataset=PairDataset([], [])), ValueError, r"task 'sts' has an empty dataset"),
    (dict(name="a.b"), ValueError, r"task name must be a non-empty string without '.' or '/'"),
    (dict(name=""), ValueError, r"task name must be a non-empty string"),
    (dict(name="t", weight=-1.0), ValueError, r"task 't': weight must be a finite number >= 0"),
    (dict(name="t", loss="mnrl"), TypeError, r"task 't': loss must be callable"),
    (dict(name="t", dataset=3), TypeError, r"dataset must have __len__ and __getitem__"),
])
def test_task_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        Task(**{"name": "t", "dataset": _pairs(4), "loss": MNRL, **kwargs})


# ------------------------------------------------------------------------------------------ weighting
def _two_tasks(w=(1.0, 1.0)):
    return [Task("a", _pairs(4, "a"), MNRL, weight=w[0]), Task("b", _pairs(4, "b"), MNRL, weight=w[1])]


def test_fixed_weights_from_tasks_or_explicit_and_their_errors():
    fixed = FixedWeights()
    fixed.bind(_two_tasks((0.5, 2.0)))
    assert fixed.weights() == [0.5, 2.0]
    assert fixed.combine(1, torch.tensor(3.0)).item() == 6.0
    explicit = FixedWeights([1.0, 3.0])
    explicit.bind(_two_tasks())
    assert explicit.weights() == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"weights has 3 entries but there are 2 tasks"):
        FixedWeights([1, 2, 3]).bind(_two_tasks())
    with pytest.raises(ValueError, match=r"weights must be finite, >= 0 and not all 0"):
        FixedWeights([0, 0]).bind(_two_tasks())


def test_loss_ratio_weighting_favours_the_task_that_improved_least():
    w = LossRatioWeighting(alpha=1.0, window=2)
    w.bind(_two_tasks())
    assert w.weights() == [1.0, 1.0]
    for value_a, value_b in [(2.0, 4.0), (2.0, 4.0), (2.0, 2.0), (2.0, 2.0)]:
        w.observe(0, value_a)
        w.observe(1, value_b)
    # task a: 2 -> 2 (ratio 1); task b: 4 -> 2 (ratio 0.5); weights sum to K = 2
    assert w.ratios() == pytest.approx([1.0, 0.5])
    assert w.weights() == pytest.approx([2 * 1 / 1.5, 2 * 0.5 / 1.5])
    w.bind(_two_tasks())                                    # a new run starts afresh
    assert w.weights() == [1.0, 1.0]
    squared = LossRatioWeighting(alpha=2.0, window=1)
    squared.bind(_two_tasks())
    for a, b in [(1.0, 1.0), (1.0, 0.5)]:
        squared.observe(0, a), squared.observe(1, b)
    assert squared.weights() == pytest.approx([2 * 1 / 1.25, 2 * 0.25 / 1.25])


def test_dynamic_weight_average_follows_liu_et_al():
    w = DynamicWeightAverage(temperature=2.0, window=2)
    w.bind(_two_tasks())
    dwa = lambda r: 2 * np.exp(np.asarray(r) / 2) / np.exp(np.asarray(r) / 2).sum()
    w.observe(0, 4.0), w.observe(1, 4.0)                    # window 1 (2 steps): means 4 and 4
    assert w.weights() == [1.0, 1.0]                        # one window: no ratio yet
    w.observe(0, 2.0), w.observe(1, 3.0)                    # window 2: means 2 and 3
    np.testing.assert_allclose(w.weights(), dwa([2 / 4, 3 / 4]))
    assert w.weights()[1] > w.weights()[0]                  # b fell more slowly: more weight
    w.observe(0, 1.0), w.observe(0, 1.0)                    # window 3: b not drawn, keeps its mean 3
    np.testing.assert_allclose(w.weights(), dwa([1 / 2, 3 / 3]))


def test_uncertainty_weighting_learns_log_variance_of_the_loss():
    w = UncertaintyWeighting(lr_scale=10.0)
    w.bind(_two_tasks())
    assert w.weights() == [1.0, 1.0] and [n for n, _ in w.named_parameters()] == ["raw"]
    loss = torch.tensor(4.0)
    torch.testing.assert_close(w.combine(1, loss), loss)                      # s = 0: exp(0) * L + 0
    opt = torch.optim.Adam(w.parameters(), lr=0.02)
    for _ in range(120):                                    # minimise exp(-s) * 4 + s for task 1 only
        opt.zero_grad()
        w.combine(1, loss).backward()
        opt.step()
    assert w.log_vars[1].item() == pytest.approx(math.log(4.0), abs=0.05)   # the minimiser s = log L
    assert w.log_vars[0].item() == 0.0 and w.weights()[1] == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match=r"lr_scale must be a finite number > 0"):
        UncertaintyWeighting(lr_scale=0.0)


def test_multitask_loss_dispatches_to_the_current_task_and_logs_weights():
    calls = []

    def first(a, p):
        calls.append("first")
        return MNRL(a, p)

    def second(e1, e2, scores):
        calls.append("second")
        return cosent_loss(e1, e2, scores)

    tasks = [Task("ret", _pairs(4), first, weight=0.5),
             Task("sts", ScoredPairDataset(["a"] * 4, ["b"] * 4, [0.1, 0.2, 0.3, 0.4]), second, weight=2.0)]
    loss = MultiTaskLoss(tasks)
    a, p, s = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0.1, 0.5, 0.2, 0.9])
    out = loss(a, p)
    assert calls == ["first"] and out.loss.item() == pytest.approx(0.5 * MNRL(a, p).loss.item(), rel=1e-6)
    loss.current = 1
    out = loss(a, p, s)
    assert calls == ["first", "second"]
    assert out.loss.item() == pytest.approx(2.0 * cosent_loss(a, p, s).loss.item(), rel=1e-6)
    assert out.stats["weight/ret"] == 0.5 and out.stats["weight/sts"] == 2.0
    assert out.stats["task_loss"] == out.stats["loss/sts"] and "sts/accuracy" in out.stats
    with pytest.raises(TypeError, match=r"the loss of task 'sts' must return a LossOutput"):
        MultiTaskLoss([Task("sts", _pairs(4), lambda a, p: 1.0)])(a, p)
    with pytest.raises(ValueError, match=r"the task list is empty"):
        MultiTaskLoss([])
    with pytest.raises(ValueError, match=r"task names must be unique, repeated: \['ret'\]"):
        MultiTaskLoss([tasks[0], tasks[0]])


# ------------------------------------------------------------------------------------------ training, real data
@pytest.fixture(scope="module")
def real_tasks():
    retrieval = pairs_from_retrieval(load_retrieval("scifact", "train"))
    sts = scored_pairs_from_sts(load_sts("stsb", "train"))
    news = labelled_texts(load_classification("ag_news", "train"), n=300, seed=0)
    return retrieval, sts, news


def _cfg(**kw):
    return TrainConfig(**{**dict(steps=12, batch_size=8, lr=1e-3, max_length=16), **kw})


class RecordBatches:
    """Records, in on_step_begin (after the scheduler), the task and the row indices of every step."""

    def __init__(self):
        self.batches = []

    cache_key = "record-batches"

    def on_step_begin(self, state):
        self.batches.append((state.dataset.task, list(state.dataset.rows)))


@pytest.fixture(scope="module")
def multitask_run(real_tasks, tmp_path_factory):
    retrieval, sts, news = real_tasks
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("mt_cache")
        mp.setenv("EMBEDLESSONS_CACHE", str(cache))
        mp.delenv("EMBEDLESSONS_NO_CACHE", raising=False)
        tasks = [Task("retrieval", retrieval, MNRL),
                 Task("sts", sts, functools.partial(cosent_loss, scale=20.0)),
                 Task("news", news, PrototypeLoss(4, 64, temperature=0.1), no_duplicates=False)]
        model, record = tiny(), RecordBatches()
        out = tmp_path_factory.mktemp("mt_run")
        before = tasks[2].loss.prototypes.detach().clone()
        history = train_multitask(model, tasks, _cfg(output_dir=str(out)), sampler="temperature", temperature=2.0,
                                  weighting=UncertaintyWeighting(lr_scale=100.0), callbacks=[record],
                                  cache=True, progress=False)
        yield dict(tasks=tasks, model=model, history=history, record=record, out=out, before=before,
                   cache=cache)


def test_realised_task_mix_is_the_sampler_schedule(multitask_run, real_tasks):
    history, tasks = multitask_run["history"], multitask_run["tasks"]
    sizes = [len(t.dataset) for t in tasks]
    schedule = task_schedule(sizes, 12, "temperature", 2.0, seed=0)
    assert [r["task"] for r in history.steps] == [tasks[i].name for i in schedule]
    realised = task_mix(history)
    assert list(realised) == ["retrieval", "sts", "news"]
    np.testing.assert_allclose(list(realised.values()), np.bincount(schedule, minlength=3) / 12)
    np.testing.assert_allclose(list(history.meta["expected_mix"].values()),
                               task_probabilities(sizes, "temperature", 2.0))
    assert history.meta["dataset_rows"] == dict(zip(["retrieval", "sts", "news"], sizes))
    assert len(set(schedule)) == 3                          # every task drawn at least once in 12 steps


def test_every_batch_is_one_task_from_its_own_sampler(multitask_run):
    tasks, batches = multitask_run["tasks"], multitask_run["record"].batches
    assert len(batches) == 12
    for i, task in enumerate(tasks):
        own = [rows for t, rows in batches if t == i]
        if task.no_duplicates is not False:                 # the default: no repeated text in a batch
            assert count_duplicate_batches(task.dataset, own) == 0
            stream = iter(NoDuplicatesBatchSampler(task.dataset, 8, seed=0 + i))
            assert own == [next(stream) for _ in own]      # the task's sampler, seeded with seed + i
        assert all(0 <= r < len(task.dataset) and len(rows) == 8 for rows in own for r in rows)


def test_weights_and_task_losses_are_logged_and_learned(multitask_run):
    history, tasks = multitask_run["history"], multitask_run["tasks"]
    names = [t.name for t in tasks]
    for r in history.steps:
        assert {f"weight/{n}" for n in names} <= set(r) and r[f"loss/{r['task']}"] == r["task_loss"]
        assert f"{r['task']}/accuracy" in r
    steps, weights = history.values("weight/" + history.steps[0]["task"])
    assert steps == list(range(1, 13)) and weights[0] == 1.0 and weights[-1] != 1.0     # uncertainty moved
    first = history.steps[0]                                # the back-propagated loss: exp(-s) L + s, s = 0
    assert first["loss"] == pytest.approx(first["task_loss"], rel=1e-6)
    assert not torch.equal(tasks[2].loss.prototypes.detach().cpu(), multitask_run["before"])  # trained too
    assert history.meta["weighting"] == ["UncertaintyWeighting", {"init": 0.0, "lr_scale": 100.0}]


def test_checkpoint_loads_in_sentence_transformers(multitask_run):
    from sentence_transformers import SentenceTransformer

    texts = ["A claim about T cells.", "Oil prices rose on Tuesday.", "x"]
    ours = multitask_run["model"].encode(texts, cache=False, progress=False)
    st = SentenceTransformer(str(multitask_run["out"] / "final"), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)
    assert not np.allclose(tiny().encode(texts, cache=False, progress=False), ours, atol=1e-3)   # it trained


def test_run_cache_reuses_a_multitask_run(multitask_run, real_tasks, monkeypatch):
    retrieval, sts, news = real_tasks
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(multitask_run["cache"]))
    tasks = [Task("retrieval", retrieval, MNRL), Task("sts", sts, functools.partial(cosent_loss, scale=20.0)),
             Task("news", news, PrototypeLoss(4, 64, temperature=0.1), no_duplicates=False)]
    fresh = tiny()
    again = train_multitask(fresh, tasks, _cfg(output_dir=None), sampler="temperature", temperature=2.0,
                            weighting=UncertaintyWeighting(lr_scale=100.0), callbacks=[RecordBatches()],
                            cache=True, progress=False)
    assert again.from_cache and again.steps == multitask_run["history"].steps
    torch.testing.assert_close(tasks[2].loss.prototypes, multitask_run["tasks"][2].loss.prototypes)
    texts = ["A claim about T cells."]
    np.testing.assert_allclose(fresh.encode(texts, cache=False, progress=False),
                               multitask_run["model"].encode(texts, cache=False, progress=False), atol=1e-6)


def test_one_task_reproduces_the_single_task_trainer(real_tasks):
    """Same batches, same schedule, same optimiser: with dropout off (the window only reorders rows within a
    batch, which changes which row gets which dropout mask), the losses agree to float precision."""
    retrieval = real_tasks[0]

    def no_dropout(model):
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model

    cfg = _cfg(steps=4)
    single = train(no_dropout(tiny()), retrieval, MNRL, cfg, progress=False)
    multi = train_multitask(no_dropout(tiny()), [Task("retrieval", retrieval, MNRL)], cfg, sampler="uniform",
                            progress=False)
    np.testing.assert_allclose(multi.losses, single.losses, rtol=1e-4)
    assert multi.losses[-1] < multi.losses[0]


def test_train_multitask_errors(real_tasks):
    retrieval = real_tasks[0]
    model = tiny()
    with pytest.raises(ValueError, match=r"the task list is empty"):
        train_multitask(model, [], _cfg(), progress=False)
    with pytest.raises(ValueError, match=r"task 'small': batch_size 8 is larger than the dataset \(5 rows\)"):
        train_multitask(model, [Task("big", retrieval, MNRL), Task("small", _pairs(5), MNRL)], _cfg(), progress=False)
    with pytest.raises(ValueError, match=r"unknown sampler 'random'"):
        train_multitask(model, [Task("big", retrieval, MNRL)], _cfg(), sampler="random", progress=False)
    with pytest.raises(ValueError, match=r"sampler temperature must be a finite number > 0, got 0"):
        train_multitask(model, [Task("big", retrieval, MNRL)], _cfg(), temperature=0, progress=False)
    with pytest.raises(ValueError, match=r"weights has 1 entries but there are 2 tasks"):
        train_multitask(model, [Task("a", retrieval, MNRL), Task("b", _pairs(9), MNRL)], _cfg(),
                        weighting=FixedWeights([1.0]), progress=False)
    with pytest.raises(TypeError, match=r"config must be a TrainConfig"):
        train_multitask(model, [Task("a", retrieval, MNRL)], {"steps": 3}, progress=False)
