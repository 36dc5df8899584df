"""ANCE-style refresh of mined negatives during training (embedlessons.ance)."""
import functools
import zlib

import numpy as np
import pytest

from embedlessons.ance import ANCERefresh
from embedlessons.negatives import RankWindow, mine_dense, random_negatives

DOC_IDS = [f"d{i}" for i in range(30)]
CORPUS = [f"document {i} about topic {i % 5} and word{i} word{(i * 7) % 30}" for i in range(30)]
QUERIES = {f"q{j}": f"query about topic {j % 5} word{j} word{j + 1}" for j in range(6)}
# 1, 2 or 3 positives per query
POSITIVES = {f"q{j}": [f"d{j + t}" for t in range(1 + j % 3)] for j in range(6)}


class FakeModel:
    """A bag-of-words encoder whose weights we can change between steps, like training would."""

    def __init__(self, seed=0):
        self.weights = np.random.default_rng(seed).normal(size=(64, 16)).astype(np.float32)
        self.calls = []

    def encode(self, texts, max_length=None, batch_size=32, cache=True, progress=True, desc=""):
        self.calls.append((len(texts), cache))
        bow = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                bow[i, zlib.crc32(w.encode()) % 64] += 1
        v = bow @ self.weights
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class FakeDataset:
    def __init__(self, anchors, positives, negatives):
        self.anchors, self.positives = list(anchors), list(positives)
        self.negatives = [list(n) for n in negatives]
        self.k = len(self.negatives[0])
        self.stack_negatives = True

    def __len__(self):
        return len(self.anchors)

    def __getitem__(self, i):
        return (self.anchors[i], self.positives[i], *self.negatives[i])

    def set_negatives(self, rows, new):
        for i, n in zip(rows, new):
            self.negatives[i] = list(n)


class FakeHistory:
    def __init__(self):
        self.logged = {}

    def log(self, step, **values):
        self.logged.setdefault(step, {}).update(values)


class FakeState:
    def __init__(self, model, dataset):
        self.step, self.model, self.dataset, self.history = 0, model, dataset, FakeHistory()


def _dataset(k=2):
    rows = [(QUERIES[q], CORPUS[DOC_IDS.index(p)]) for q, ps in POSITIVES.items() for p in ps]  # one row per positive
    return FakeDataset([a for a, _ in rows], [p for _, p in rows], [["initial"] * k for _ in rows])


def _expected(model, k, skip_top=0):
    """Negatives an independent mining with the same model would give, per query id."""
    qids = list(QUERIES)
    mined = mine_dense(qids, DOC_IDS, POSITIVES, depth=10,
                       query_vectors=model.encode([QUERIES[q] for q in qids]), doc_vectors=model.encode(CORPUS))
    return {q: [CORPUS[DOC_IDS.index(c.doc_id)] for c in mined.candidates[q][skip_top:skip_top + k]] for q in qids}


def _run(callback, model, dataset, steps, check=None):
    state = FakeState(model, dataset)
    callback.on_train_begin(state)
    rng = np.random.default_rng(1)
    for step in range(1, steps + 1):
        state.step = step
        callback.on_step_begin(state)
        if check:
            check(step, state)
        model.weights += 0.5 * rng.normal(size=model.weights.shape).astype(np.float32)  # "training"
    return state


def test_refresh_schedule_index_age_and_mined_negatives():
    model, dataset = FakeModel(), _dataset(k=2)
    cb = ANCERefresh(CORPUS, DOC_IDS, POSITIVES, every_n_steps=3, n_negatives=2, queries=QUERIES, depth=10,
                     filters=[RankWindow(skip_top=1)])
    seen = {}

    def check(step, state):
        if step in (4, 7):  # right after a refresh: the negatives are what the current model mines
            exp = _expected(state.model, k=2, skip_top=1)
            for i in range(len(dataset)):
                q = cb._row_qids[i]
                assert list(dataset[i][2:]) == exp[q]
                assert not set(dataset[i][2:]) & {CORPUS[DOC_IDS.index(p)] for p in POSITIVES[q]}
            seen[step] = [list(dataset[i][2:]) for i in range(len(dataset))]

    state = _run(cb, model, dataset, steps=8, check=check)
    logged = state.history.logged
    assert [logged[s]["index_age"] for s in range(1, 9)] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert sorted(s for s in logged if "refresh_seconds" in logged[s]) == [4, 7]
    assert all(logged[s]["refresh_seconds"] >= 0 for s in (4, 7))
    assert logged[4]["negatives_changed"] == 1.0  # from the "initial" placeholders
    assert 0 < logged[7]["negatives_changed"] <= 1.0 and seen[4] != seen[7]  # the model moved
    assert logged[4]["filtered"] == 6  # the rank window drops one candidate per query
    assert [r["step"] for r in cb.refreshes] == [4, 7]
    # corpus + queries encoded at each refresh, never through the embedding cache (weights change)
    # (the test's own reference mining calls encode with the default cache=True)
    assert [n for n, cache in model.calls if cache is False] == [30, 6, 30, 6]


def test_refresh_at_start_and_single_negative_rows():
    model = FakeModel()
    rows = [(QUERIES[q], CORPUS[DOC_IDS.index(ps[0])]) for q, ps in POSITIVES.items()]
    dataset = FakeDataset([a for a, _ in rows], [p for _, p in rows], [["x"] for _ in rows])
    dataset.stack_negatives = False  # a 1-negative dataset takes plain strings
    received = []
    original = dataset.set_negatives
    dataset.set_negatives = lambda r, n: (received.append(n), original(r, [[t] for t in n]))
    with pytest.raises(ValueError, match="at most 27 negatives"):  # depth 30 from a 30-doc corpus
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 100, queries=QUERIES, depth=30).on_train_begin(
            FakeState(model, _dataset(k=1)))
    cb = ANCERefresh(CORPUS, DOC_IDS, POSITIVES, every_n_steps=100, n_negatives=1, queries=QUERIES,
                     refresh_at_start=True, depth=10)
    state = _run(cb, model, dataset, steps=2)
    assert [r["step"] for r in cb.refreshes] == [1]
    assert state.history.logged[1]["index_age"] == 0 and state.history.logged[2]["index_age"] == 1
    assert all(isinstance(t, str) for t in received[0])


def test_random_sampling_and_top_up_when_filters_remove_everything():
    model, dataset = FakeModel(), _dataset(k=2)
    cb = ANCERefresh(CORPUS, DOC_IDS, POSITIVES, every_n_steps=1, n_negatives=2, queries=QUERIES, depth=5,
                     filters=[RankWindow(skip_top=4)], sample="random", seed=3)
    state = _run(cb, model, dataset, steps=2)
    rec = state.history.logged[2]
    assert rec["rows_topped_up"] == len(dataset)  # one candidate left per query, so one random extra
    for i in range(len(dataset)):
        negs = dataset[i][2:]
        q = cb._row_qids[i]
        assert len(set(negs)) == 2 and not set(negs) & {CORPUS[DOC_IDS.index(p)] for p in POSITIVES[q]}


def test_positives_keyed_by_anchor_text_and_bad_input():
    model, dataset = FakeModel(), _dataset(k=1)
    by_text = {QUERIES[q]: ps for q, ps in POSITIVES.items()}
    cb = ANCERefresh(CORPUS, DOC_IDS, by_text, every_n_steps=1, n_negatives=1, depth=10)
    _run(cb, model, dataset, steps=2)
    assert len(cb.refreshes) == 1
    with pytest.raises(ValueError, match="1 negative"):
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, n_negatives=2, queries=QUERIES).on_train_begin(
            FakeState(model, _dataset(k=1)))
    with pytest.raises(ValueError, match="not texts of `queries`"):
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, queries={"q0": "something else"}).on_train_begin(
            FakeState(model, _dataset(k=1)))
    with pytest.raises(ValueError, match="have no positive"):
        ANCERefresh(CORPUS, DOC_IDS, {"q0": ["d0"]}, 2, queries=QUERIES).on_train_begin(
            FakeState(model, _dataset(k=1)))
    with pytest.raises(ValueError, match="not in the corpus"):
        ANCERefresh(CORPUS, DOC_IDS, {"q0": ["nope"]}, 2)
    with pytest.raises(ValueError, match="corpus is empty"):
        ANCERefresh([], [], POSITIVES, 2)
    with pytest.raises(ValueError, match="every_n_steps"):
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 0)
    with pytest.raises(ValueError, match="cannot exceed depth"):
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, n_negatives=5, depth=3)
    with pytest.raises(TypeError, match="TripletDataset"):
        ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2).on_train_begin(FakeState(model, object()))


def test_cache_key_describes_the_settings():
    a = ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, queries=QUERIES)
    assert a.cache_key == ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, queries=QUERIES).cache_key
    assert a.cache_key != ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 3, queries=QUERIES).cache_key
    assert a.cache_key != ANCERefresh(CORPUS, DOC_IDS, POSITIVES, 2, queries=QUERIES,
                                      filters=[RankWindow(1)]).cache_key


# ----------------------------------------------------------------------------- with the real trainer

def test_with_the_trainer_on_a_scifact_slice():
    training = pytest.importorskip("embedlessons.training")
    if not hasattr(training, "TripletDataset") or not hasattr(training, "train"):
        pytest.skip("the Part 2 trainer is not there yet")
    from embedlessons.data import load_retrieval
    from embedlessons.losses import in_batch_info_nce
    from embedlessons.models import small_bert

    ds = load_retrieval("scifact", "train").subset(n_distractors=60, seed=0)
    qids = list(ds.queries)[:24]
    rows = [(q, d) for q in qids for d in ds.qrels[q]]
    texts = dict(zip(ds.doc_ids, ds.doc_texts()))
    # a slice of the corpus: the slice's positives plus 60 distractors
    keep = {d for q in qids for d in ds.qrels[q]} | set(ds.doc_ids[-60:])
    doc_ids = [d for d in ds.doc_ids if d in keep]
    initial = random_negatives(qids, doc_ids, {q: ds.qrels[q] for q in qids}, n=1, seed=0).negatives()
    dataset = training.TripletDataset([ds.queries[q] for q, _ in rows], [texts[d] for _, d in rows],
                                      [texts[initial[q][0]] for q, _ in rows])
    model = small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
    refresh = ANCERefresh([texts[d] for d in doc_ids], doc_ids, {q: ds.qrels[q] for q in qids},
                          every_n_steps=2, n_negatives=1, queries={q: ds.queries[q] for q in qids},
                          depth=10, filters=[RankWindow(skip_top=1)], doc_max_length=32, query_max_length=32)
    checked = []

    class Check:  # runs after ANCERefresh: the dataset holds what the current model mines
        def on_step_begin(self, state):
            if state.step in (3, 5):
                mined = mine_dense({q: ds.queries[q] for q in qids}, doc_ids, {q: ds.qrels[q] for q in qids},
                                   depth=3, model=state.model, doc_texts=[texts[d] for d in doc_ids],
                                   doc_max_length=32, query_max_length=32)
                for i, (q, _) in enumerate(rows):
                    assert state.dataset[i][2] == texts[mined.candidates[q][1].doc_id]
                checked.append(state.step)

    config = training.TrainConfig(steps=6, batch_size=8, lr=1e-3, max_length=32, seed=0, no_duplicates=False)
    history = training.train(model, dataset, functools.partial(in_batch_info_nce, temperature=0.05), config,
                             callbacks=[refresh, Check()], progress=False)
    assert checked == [3, 5]
    ages = [r.get("index_age") for r in history.steps]
    assert ages == [0, 1, 0, 1, 0, 1]
    assert [r["step"] for r in history.steps if "refresh_seconds" in r] == [3, 5]
    assert all(np.isfinite(history.losses))
