"""Tests for embedlessons.augment: each augmentation does what its docstring says, deterministically."""
import numpy as np
import pytest

from embedlessons.augment import (Compose, Identity, SpanCrop, WordDropout, WordShuffle, WordSwap, make_views,
                                  span_crop, word_dropout, word_shuffle, word_swap)

SENTENCE = " ".join(f"w{i}" for i in range(20))          # 20 distinct words: positions are recoverable


def _positions(text):
    return [int(w[1:]) for w in text.split()]


def test_word_dropout_rate_order_and_never_empty():
    rng = np.random.default_rng(0)
    kept = [len(word_dropout(SENTENCE, 0.3, rng).split()) for _ in range(2000)]
    assert np.mean(kept) == pytest.approx(20 * 0.7, abs=0.2)          # deletion rate is p
    out = word_dropout(SENTENCE, 0.5, 1)
    assert _positions(out) == sorted(_positions(out))                  # survivors keep their order
    assert all(len(word_dropout("one two", 0.99, s).split()) >= 1 for s in range(200))
    assert word_dropout(SENTENCE, 0.0, 3) == SENTENCE
    assert word_dropout("  spaced   out  ", 0.0, 0) == "spaced out"


def test_span_crop_is_contiguous_and_within_ratio():
    rng = np.random.default_rng(0)
    lengths, starts = [], []
    for _ in range(2000):
        pos = _positions(span_crop(SENTENCE, 0.2, 0.6, rng))
        assert pos == list(range(pos[0], pos[0] + len(pos)))           # one contiguous span
        lengths.append(len(pos)); starts.append(pos[0])
    assert min(lengths) >= 4 and max(lengths) <= 12                    # round(0.2*20) .. round(0.6*20)
    assert np.mean(lengths) == pytest.approx(8.0, abs=0.3)             # E[ratio] = 0.4
    assert min(starts) == 0 and max(starts + np.array(lengths)) == 20  # spans reach both ends
    assert span_crop(SENTENCE, 1.0, 1.0, 5) == SENTENCE
    assert span_crop("word", 0.1, 0.1, 0) == "word"                    # at least one word


def test_word_swap_exchanges_exactly_two_words():
    out = word_swap(SENTENCE, 1, 4)
    assert sorted(out.split()) == sorted(SENTENCE.split())
    assert sum(a != b for a, b in zip(out.split(), SENTENCE.split())) == 2
    assert word_swap(SENTENCE, 0, 4) == SENTENCE
    assert word_swap("alone", 3, 0) == "alone"
    many = word_swap(SENTENCE, 10, 0)
    assert sorted(many.split()) == sorted(SENTENCE.split()) and many != SENTENCE


def test_word_shuffle_is_local():
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(500):
        pos = _positions(word_shuffle(SENTENCE, 3, rng))
        assert sorted(pos) == list(range(20))
        displacement = np.abs(np.array(pos) - np.arange(20))
        assert displacement.max() <= 2                                  # window - 1
        moved += int((displacement > 0).sum())
    assert moved > 500 * 5                                              # it does shuffle
    assert word_shuffle(SENTENCE, 1, 0) == SENTENCE


def test_determinism_and_seed_dependence():
    for fn in (lambda r: word_dropout(SENTENCE, 0.3, r), lambda r: span_crop(SENTENCE, 0.1, 0.9, r),
               lambda r: word_swap(SENTENCE, 2, r), lambda r: word_shuffle(SENTENCE, 4, r)):
        assert fn(7) == fn(7) == fn(np.random.default_rng(7))
        assert len({fn(s) for s in range(20)}) > 5


def test_view_classes_and_compose():
    view = Compose((SpanCrop(0.5, 1.0), WordDropout(0.2), WordSwap(1), WordShuffle(2)))
    gen = np.random.default_rng(3)
    expected = word_shuffle(word_swap(word_dropout(span_crop(SENTENCE, 0.5, 1.0, gen), 0.2, gen), 1, gen), 2, gen)
    assert view(SENTENCE, np.random.default_rng(3)) == expected        # steps share one generator, in order
    assert repr(view) == ("Compose(steps=(SpanCrop(min_ratio=0.5, max_ratio=1.0), WordDropout(p=0.2), "
                          "WordSwap(n_swaps=1), WordShuffle(window=2)))")
    assert Identity()(SENTENCE, 0) == SENTENCE
    assert Compose()(SENTENCE) == SENTENCE


def test_make_views():
    texts = [f"sentence number {i} has a few more words in it" for i in range(50)]
    a1, p1 = make_views(texts, WordDropout(0.3), seed=1)
    a2, p2 = make_views(texts, WordDropout(0.3), seed=1)
    assert (a1, p1) == (a2, p2) and len(a1) == len(p1) == 50
    assert sum(a != p for a, p in zip(a1, p1)) > 30                    # two independent draws differ
    assert make_views(texts, WordDropout(0.3), seed=2) != (a1, p1)
    anchors, positives = make_views(texts, Identity(), SpanCrop(0.5, 0.5), seed=0)
    assert anchors == texts
    assert all(len(p.split()) == 5 for p in positives)                 # round(0.5 * 10)


@pytest.mark.parametrize("call, error", [
    (lambda: word_dropout(SENTENCE, 1.0), ValueError),
    (lambda: word_dropout(SENTENCE, -0.1), ValueError),
    (lambda: span_crop(SENTENCE, 0.0, 0.5), ValueError),
    (lambda: span_crop(SENTENCE, 0.6, 0.5), ValueError),
    (lambda: word_swap(SENTENCE, -1), ValueError),
    (lambda: word_shuffle(SENTENCE, 0), ValueError),
    (lambda: word_dropout(None), TypeError),
    (lambda: word_dropout(SENTENCE, 0.1, rng=0.5), TypeError),
    (lambda: make_views([], WordDropout()), ValueError),
    (lambda: make_views("one text", WordDropout()), TypeError),
    (lambda: make_views(["a b"], "crop"), TypeError),
    (lambda: Compose(("crop",)), TypeError),
])
def test_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_empty_text_passes_through():
    for fn in (word_dropout, span_crop, word_swap, word_shuffle):
        assert fn("") == ""
