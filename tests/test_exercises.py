"""The Exercise 1 checker accepts a right answer and names each common wrong one."""
import numpy as np
import pytest
import torch

from embedlessons.exercises import check_bi_encoder
from embedlessons.models import load_model


@pytest.fixture(scope="module")
def minilm():
    return load_model()


def _make(minilm, pooling="mean", use_mask=True, normalise=True):
    def encode(sentences):
        batch = minilm.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            tokens = minilm.transformer(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        if pooling == "cls":
            v = tokens[:, 0]
        elif use_mask:
            v = (tokens * mask).sum(1) / mask.sum(1)
        else:
            v = tokens.mean(1)
        return torch.nn.functional.normalize(v, dim=-1) if normalise else v
    return encode


def test_right_answer_passes(minilm):
    result = check_bi_encoder(_make(minilm), model=minilm)
    assert result.passed and bool(result)
    # a NumPy answer one sentence at a time (no padding at all) is right too
    one_by_one = lambda s: np.concatenate([_make(minilm)([x]).numpy() for x in s])
    assert check_bi_encoder(one_by_one, model=minilm).passed


@pytest.mark.parametrize("kwargs, diagnosis", [
    (dict(normalise=False), "not normalised"),
    (dict(pooling="cls"), "CLS pooling"),
    (dict(use_mask=False), "use the attention mask"),
])
def test_common_mistakes_are_named(minilm, kwargs, diagnosis):
    result = check_bi_encoder(_make(minilm, **kwargs), model=minilm)
    assert not result.passed
    assert diagnosis in result.message


def test_other_wrong_answers(minilm):
    def stub(sentences):
        raise NotImplementedError
    assert "NotImplementedError" in check_bi_encoder(stub, model=minilm).message
    assert "shape" in check_bi_encoder(lambda s: np.zeros((len(s), 10)), model=minilm).message
    noisy = lambda s: _make(minilm)(s) + 0.01
    res = check_bi_encoder(noisy, model=minilm)
    assert not res.passed and "differ from the reference" in res.message


# ------------------------------------------------------------------ "More to try" checkers (section 1.5)
from embedlessons.data import ScoredPairs, load_sts
from embedlessons.evaluation import pearson, spearman
from embedlessons.exercises.part1 import (check_sick_comparison, check_untrained_pooling, sick_reference,
                                          untrained_pooling_reference)
from embedlessons.lexical import bm25_pair_scores, word_overlap_scores
from embedlessons.models import BiEncoder, small_bert


def _head(name: str, n: int) -> ScoredPairs:
    """The first n pairs of a real STS test set (fast enough for a unit test)."""
    data = load_sts(name, "test")
    return ScoredPairs(data.name, data.split, data.sentences1[:n], data.sentences2[:n], data.scores[:n])


@pytest.fixture(scope="module")
def sick_head():
    return _head("sick", 80)


@pytest.fixture(scope="module")
def stsb_head():
    return _head("stsb", 60)


def _sick_answer(minilm, data, correlation=spearman):
    """What a reader computes for "Word overlap on SICK", the way section 1.1 does it."""
    a = minilm.encode(data.sentences1, max_length=64, cache=False, progress=False)
    b = minilm.encode(data.sentences2, max_length=64, cache=False, progress=False)
    return {"word overlap": correlation(word_overlap_scores(data.sentences1, data.sentences2), data.scores),
            "BM25": correlation(bm25_pair_scores(data.sentences1, data.sentences2), data.scores),
            "MiniLM": correlation((a * b).sum(1), data.scores)}


def test_sick_checker_accepts_the_right_numbers_and_names_mistakes(minilm, sick_head):
    right = _sick_answer(minilm, sick_head)
    result = check_sick_comparison(right, model=minilm, data=sick_head)
    assert result.passed, result.message
    rounded = {k: round(v, 3) for k, v in right.items()}
    assert check_sick_comparison(rounded, model=minilm, data=sick_head).passed
    pearson_answer = _sick_answer(minilm, sick_head, correlation=pearson)
    result = check_sick_comparison(pearson_answer, model=minilm, data=sick_head)
    assert not result.passed and "Pearson" in result.message
    off = dict(right, BM25=right["BM25"] + 0.05)
    result = check_sick_comparison(off, model=minilm, data=sick_head)
    assert not result.passed and "'BM25'" in result.message and "differ" in result.message
    assert sick_reference(model=minilm, data=sick_head)["MiniLM"]["right"] == pytest.approx(right["MiniLM"], abs=1e-6)


@pytest.mark.parametrize("answer, message", [
    (None, "fill in"),
    ([0.5, 0.6, 0.7], "expected a dict"),
    ({"word overlap": 0.5, "BM25": 0.5}, "missing ['MiniLM']"),
    ({"word overlap": 0.5, "BM25": 0.5, "MiniLM": 0.8, "GloVe": 0.6}, "unknown ['GloVe']"),
    ({"word overlap": 0.5, "BM25": "high", "MiniLM": 0.8}, "must be a number"),
    ({"word overlap": 55.0, "BM25": 55.0, "MiniLM": 80.0}, "outside [-1, 1]"),
])
def test_answer_form_is_checked_before_any_computation(answer, message):
    # data=... would fail if the reference were computed: the form check must come first
    result = check_sick_comparison(answer, model=object(), data=object())
    assert not result.passed and message in result.message
    assert not check_untrained_pooling({"mean": 0.5}, data=object()).passed


def test_untrained_pooling_checker(stsb_head):
    model = small_bert(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536, seed=0)
    answer, dots = {}, {}
    for mode in ("mean", "cls", "max"):
        pooled = BiEncoder(model.transformer, model.tokenizer, pooling=mode, normalize=True)
        a = pooled.encode(stsb_head.sentences1, max_length=64, cache=False, progress=False)
        b = pooled.encode(stsb_head.sentences2, max_length=64, cache=False, progress=False)
        answer[mode] = spearman((a * b).sum(1), stsb_head.scores)
        raw = BiEncoder(model.transformer, model.tokenizer, pooling=mode, normalize=False)
        ra = raw.encode(stsb_head.sentences1, max_length=64, cache=False, progress=False)
        rb = raw.encode(stsb_head.sentences2, max_length=64, cache=False, progress=False)
        dots[mode] = spearman((ra * rb).sum(1), stsb_head.scores)
    result = check_untrained_pooling(answer, data=stsb_head)
    assert result.passed, result.message
    reference = untrained_pooling_reference(data=stsb_head)
    assert {m: reference[m]["right"] for m in answer} == pytest.approx(answer, abs=1e-4)
    # the dot product of unnormalised vectors ranks pairs differently, and is named
    mode = max(dots, key=lambda m: abs(dots[m] - answer[m]))
    assert abs(dots[mode] - answer[mode]) > 1e-3
    result = check_untrained_pooling(dict(answer, **{mode: dots[mode]}), data=stsb_head)
    assert not result.passed and "unnormalised" in result.message
    # another seed is another model
    assert not check_untrained_pooling(answer, data=stsb_head, seed=1).passed
