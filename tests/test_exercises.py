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
