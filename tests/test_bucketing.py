"""Padding modes, padding share, length-grouped batches, and the 5.7 timing recipes at a tiny size."""
import numpy as np
import pytest

from embedlessons.bucketing import encode_batches, length_grouped_batches, padding_share, token_lengths
from embedlessons.experiments.part5_performance import (best_time, encoding_padding_speed, precision_speed,
                                                       training_padding_speed)
from embedlessons.models import small_bert


@pytest.fixture(scope="module")
def tiny():
    return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)


TEXTS = ["a", "a much longer text with many words in it, and more words after that", "short one",
         "two words", "another fairly long sentence to pad against", "x"] * 3


def test_padding_share_by_hand():
    lengths = [2, 4, 4, 8]
    assert padding_share(lengths, [[0, 1], [2, 3]]) == pytest.approx(1 - 18 / (2 * 4 + 2 * 8))
    assert padding_share(lengths, [[0, 1], [2, 3]], pad_to=8) == pytest.approx(1 - 18 / 32)
    assert padding_share([2, 2, 8, 8], [[0, 2], [1, 3]]) > padding_share([2, 2, 8, 8], [[0, 1], [2, 3]]) == 0


def test_encode_batches_sorted_pads_least(tiny):
    lengths = token_lengths(tiny.tokenizer, TEXTS, 32)
    shares = {m: padding_share(lengths, encode_batches(len(TEXTS), 4, m, lengths), 32 if m == "max_length" else None)
              for m in ("max_length", "dynamic", "sorted")}
    assert shares["max_length"] > shares["dynamic"] > shares["sorted"]
    assert sorted(i for b in encode_batches(len(TEXTS), 4, "sorted", lengths) for i in b) == list(range(len(TEXTS)))
    with pytest.raises(ValueError, match="unknown padding mode"):
        encode_batches(3, 2, "bucketed")
    with pytest.raises(ValueError, match="one length per text"):
        encode_batches(3, 2, "sorted")


def test_length_grouped_batches_cover_rows_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=1000)
    batches = length_grouped_batches(lengths, 16, seed=1, mega_batch=8)
    flat = [i for b in batches for i in b]
    assert len(batches) == 1000 // 16 and len(set(flat)) == len(flat) and all(len(b) == 16 for b in batches)
    grouped = padding_share(lengths, batches)
    plain = padding_share(lengths, [list(range(s, s + 16)) for s in range(0, 992, 16)])
    assert grouped < plain / 2
    assert length_grouped_batches(lengths, 16, seed=1) == length_grouped_batches(lengths, 16, seed=1)
    with pytest.raises(ValueError):
        length_grouped_batches(lengths[:3], 16)


def test_timing_recipes_agree_across_modes(tiny):
    enc = encoding_padding_speed(tiny, TEXTS, batch_size=4, max_length=32, repeats=1)
    assert set(enc) == {"max_length", "dynamic", "sorted"}
    assert all(r["max_abs_diff"] < 1e-5 and r["seconds"] > 0 for r in enc.values())   # padding never changes vectors
    pairs = list(zip(TEXTS, TEXTS[::-1]))
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    tr = training_padding_speed(tiny, pairs, batch_size=4, steps=2, max_length=(16, 32))
    assert all(np.isfinite(r["losses"]).all() and r["seconds_per_step"] > 0 for r in tr.values())
    assert all((before[k] == v).all() for k, v in tiny.state_dict().items())                 # weights restored
    prec = precision_speed(tiny, TEXTS, pairs, dtypes=("float32", "bfloat16"), batch_size=4, max_length=32,
                           repeats=1, train_steps=1)
    assert prec["float32"]["min_cosine"] == pytest.approx(1.0, abs=1e-6) and prec["bfloat16"]["min_cosine"] > 0.95
    with pytest.raises(ValueError, match="unknown dtype"):
        precision_speed(tiny, TEXTS, dtypes=("int8",))
    with pytest.raises(ValueError, match="repeats"):
        best_time(lambda: None, repeats=0)
