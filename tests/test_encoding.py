"""Encoding: order, cache reuse, cache keys, batching invariance, errors."""
import numpy as np
import pytest

from embedlessons.encoding import embedding_cache_dir, encode
from embedlessons.models import small_bert

TEXTS = ["short", "a somewhat longer sentence about embeddings", "short", "medium length text here", ""]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLESSONS_CACHE", str(tmp_path))
    monkeypatch.delenv("EMBEDLESSONS_NO_CACHE", raising=False)
    return tmp_path


def test_order_and_duplicates_match_one_by_one(cache):
    model = small_bert()
    batched = encode(model, TEXTS, batch_size=2, cache=False, progress=False)
    single = np.stack([encode(model, [t], cache=False, progress=False)[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_array_equal(batched[0], batched[2])
    assert batched.dtype == np.float32 and batched.shape == (5, 128)


def test_cache_is_reused_and_keyed_by_setting(cache):
    model = small_bert()
    first = encode(model, TEXTS, progress=False)
    shards = list(embedding_cache_dir().rglob("*.npz"))
    assert len(shards) == 1
    again = encode(model, TEXTS[::-1], progress=False)
    np.testing.assert_array_equal(again, first[::-1])
    assert len(list(embedding_cache_dir().rglob("*.npz"))) == 1, "nothing new should be written"
    encode(model, TEXTS, max_length=8, progress=False)
    model.pooling = "cls"
    cls = encode(model, TEXTS, progress=False)
    assert not np.allclose(cls, first), "a different pooling must not hit the mean-pooling cache"
    assert len({p.parent for p in embedding_cache_dir().rglob("*.npz")}) == 3


def test_cache_follows_the_weights(cache):
    import torch

    model = small_bert()
    before = encode(model, TEXTS, progress=False)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    after = encode(model, TEXTS, progress=False)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, encode(model, TEXTS, cache=False, progress=False), atol=1e-6)


def test_no_cache_env(cache, monkeypatch):
    monkeypatch.setenv("EMBEDLESSONS_NO_CACHE", "1")
    encode(small_bert(), TEXTS, progress=False)
    assert not list(cache.rglob("*.npz"))


def test_empty_and_bad_input(cache):
    model = small_bert()
    assert encode(model, [], progress=False).shape == (0, 128)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encode(model, TEXTS, batch_size=0)
