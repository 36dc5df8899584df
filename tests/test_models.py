"""Bi-encoder: equal to sentence-transformers, save/load round trip, small BERTs, bad input."""
import numpy as np
import pytest
import torch

from embedlessons.models import BiEncoder, load_model, minilm_path, pool, small_bert

SENTENCES = ["A man is playing a guitar.", "A plane is taking off.",
             "Two women are embracing while holding to go packages.", "x"]


@pytest.fixture(scope="module")
def minilm():
    return load_model()


@pytest.fixture(scope="module")
def st_minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu")


def test_minilm_shape_and_settings(minilm):
    assert minilm.dim == 384
    assert (minilm.pooling, minilm.normalize, minilm.max_length) == ("mean", True, 256)
    n_params = sum(p.numel() for p in minilm.parameters())
    assert abs(n_params / 1e6 - 22.7) < 0.05


def test_equal_to_sentence_transformers(minilm, st_minilm):
    ours = minilm.encode(SENTENCES, cache=False, progress=False)
    ref = st_minilm.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_pooling_equals_sentence_transformers_pooling(minilm, mode):
    from sentence_transformers.sentence_transformer.modules import Pooling

    batch = minilm.tokenize(SENTENCES)
    with torch.no_grad():
        tokens = minilm.token_embeddings(batch)
    ours = pool(tokens, batch["attention_mask"], mode)
    ref = Pooling(384, pooling_mode=mode)({"token_embeddings": tokens,
                                           "attention_mask": batch["attention_mask"]})["sentence_embedding"]
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_pool_ignores_padding():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(tokens, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(tokens, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(tokens, mask, "cls").tolist() == [[1.0, 2.0]]


def test_save_load_round_trip_and_sentence_transformers_loads_it(tmp_path, minilm):
    from sentence_transformers import SentenceTransformer

    model = small_bert(seed=3, pooling="max", normalize=False, max_length=64)
    folder = model.save(tmp_path / "tiny")
    assert (folder / "model.safetensors").exists()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")), "no pickle files"
    again = load_model(folder)
    assert (again.pooling, again.normalize, again.max_length) == ("max", False, 64)
    a = model.encode(SENTENCES, cache=False, progress=False)
    b = again.encode(SENTENCES, cache=False, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    st = SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(st.encode(SENTENCES), a, atol=1e-5)

    folder2 = minilm.save(tmp_path / "minilm")
    np.testing.assert_allclose(SentenceTransformer(str(folder2), device="cpu").encode(SENTENCES),
                               minilm.encode(SENTENCES, cache=False, progress=False), atol=1e-5)


def test_small_bert_is_deterministic_and_small():
    a, b, c = small_bert(seed=0), small_bert(seed=0), small_bert(seed=1)
    x = a.encode(SENTENCES, cache=False, progress=False)
    np.testing.assert_array_equal(x, b.encode(SENTENCES, cache=False, progress=False))
    assert not np.allclose(x, c.encode(SENTENCES, cache=False, progress=False))
    assert a.dim == 128 and a.tokenizer.vocab_size == 30522
    assert sum(p.numel() for p in a.parameters()) < 5e6


def test_bad_input(tmp_path, minilm):
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        BiEncoder(minilm.transformer, minilm.tokenizer, pooling="sum")
    with pytest.raises(ValueError, match=r"expected token_embeddings \[B, T, d\]"):
        pool(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"attention_mask \[B, T\]"):
        pool(torch.zeros(2, 3, 4), torch.ones(2, 5))
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("one string", cache=False)
    with pytest.raises(TypeError, match="every text must be a string"):
        minilm.encode(["ok", 3], cache=False)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_model(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="divisible"):
        small_bert(hidden_size=130, num_heads=4)


def test_hub_name_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_cross_encoder_reads_the_pair_jointly(minilm):
    from embedlessons.models import CrossEncoder

    ce = CrossEncoder(minilm.transformer, minilm.tokenizer).eval()
    docs = ["A plane is taking off.", "A man plays the guitar.", "Rain."]
    s1 = ce.score("Aircraft departing", docs, batch_size=2)
    assert s1.shape == (3,) and np.isfinite(s1).all()
    one_by_one = np.array([ce.score("Aircraft departing", [d])[0] for d in docs])
    np.testing.assert_allclose(s1, one_by_one, atol=1e-5)
    assert not np.allclose(s1, ce.score("Music", docs)), "the score must depend on the query"
    assert ce.score("q", []).shape == (0,)
    with pytest.raises(TypeError, match="score"):
        ce.score("q", "not a list")
