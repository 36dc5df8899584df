"""Text augmentations that turn one unlabelled sentence into a positive pair.

Without labels, a contrastive model still needs positives. One answer is to make two *views* of the
same text that keep its meaning and differ in surface form, and train the model to match them
(in-batch InfoNCE, section 2.3): the other texts in the batch are the negatives.

- :func:`span_crop`: a random contiguous span of the words, as in Contriever's independent cropping
  (Izacard et al. 2022): two spans drawn independently from the same document form a positive pair.
- :func:`word_dropout`: delete each word with probability ``p`` (Contriever's "token deletion"; the
  "random deletion" of EDA, Wei & Zou 2019; the word-dropout noise of Lample et al. 2018).
- :func:`word_swap`: exchange two random words, ``n_swaps`` times (EDA's "random swap").
- :func:`word_shuffle`: a *local* shuffle where no word moves more than ``window - 1`` places
  (Lample et al. 2018).

Unsupervised SimCSE (Gao et al. 2021) goes further: both views are the *unchanged* text and the
only noise is dropout inside the model (:func:`embedlessons.losses.simcse_loss`); the paper found
that word deletion, cropping and synonym replacement all did worse than dropout alone.

Words are whitespace-separated tokens (punctuation stays attached). Every function takes a
``rng`` (a ``numpy.random.Generator`` or an int seed) and is deterministic given it. The classes
(:class:`SpanCrop`, :class:`WordDropout`, :class:`WordSwap`, :class:`WordShuffle`, :class:`Compose`)
wrap the functions with fixed settings and a readable ``repr``; :func:`make_views` applies them to
a list of texts to build ``(anchors, positives)`` for :class:`embedlessons.training.PairDataset`.

Example::

    >>> from embedlessons.augment import Compose, SpanCrop, WordDropout, make_views
    >>> view = Compose((SpanCrop(0.5, 1.0), WordDropout(0.1)))
    >>> anchors, positives = make_views(["A man is playing a guitar on stage."], view, seed=0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["word_dropout", "span_crop", "word_swap", "word_shuffle", "Identity", "WordDropout", "SpanCrop",
           "WordSwap", "WordShuffle", "Compose", "make_views"]

def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _words(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return text.split()


def word_dropout(text: str, p: float = 0.1, rng: np.random.Generator | int = 0) -> str:
    """Delete each word independently with probability ``p``; at least one word always survives.

    Args:
        text: the input text (split on whitespace).
        p: deletion probability, in [0, 1).
        rng: generator or seed.

    Returns:
        the remaining words joined by single spaces (the text itself if it has no words).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    words = _words(text)
    if not words:
        return text
    gen = _rng(rng)
    keep = gen.random(len(words)) >= p
    if not keep.any():                      # never return an empty view: keep one random word
        keep[gen.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def span_crop(text: str, min_ratio: float = 0.1, max_ratio: float = 0.5, rng: np.random.Generator | int = 0) -> str:
    """A random contiguous span of words (Contriever's random cropping, Izacard et al. 2022).

    The span length is ``round(r * n_words)`` (at least 1) with ``r ~ Uniform(min_ratio, max_ratio)``,
    and its start is uniform over the valid positions. Contriever crops documents with ratios 0.1-0.5;
    for single sentences, larger ratios (e.g. 0.5-1.0) keep enough of the meaning.

    Args:
        text: the input text (split on whitespace).
        min_ratio, max_ratio: bounds of the kept fraction, ``0 < min_ratio <= max_ratio <= 1``.
        rng: generator or seed.
    """
    if not 0.0 < min_ratio <= max_ratio <= 1.0:
        raise ValueError(f"need 0 < min_ratio <= max_ratio <= 1, got {min_ratio}, {max_ratio}")
    words = _words(text)
    if not words:
        return text
    gen = _rng(rng)
    ratio = gen.uniform(min_ratio, max_ratio)
    length = min(len(words), max(1, int(round(ratio * len(words)))))
    start = int(gen.integers(len(words) - length + 1))
    return " ".join(words[start:start + length])


def word_swap(text: str, n_swaps: int = 1, rng: np.random.Generator | int = 0) -> str:
    """Exchange two randomly chosen words, ``n_swaps`` times (EDA's random swap, Wei & Zou 2019).

    Texts with fewer than two words come back unchanged (as single-space-joined words).
    """
    if n_swaps < 0:
        raise ValueError(f"n_swaps must be >= 0, got {n_swaps}")
    words = _words(text)
    if not words:
        return text
    gen = _rng(rng)
    if len(words) >= 2:
        for _ in range(n_swaps):
            i, j = gen.choice(len(words), size=2, replace=False)
            words[i], words[j] = words[j], words[i]
    return " ".join(words)


def word_shuffle(text: str, window: int = 3, rng: np.random.Generator | int = 0) -> str:
    """Shuffle words locally: no word moves more than ``window - 1`` places (Lample et al. 2018).

    Word ``i`` gets the key ``i + u_i`` with ``u_i ~ Uniform(0, window)``; words are sorted by key.
    ``window=1`` leaves the order unchanged; a ``window`` as long as the text is a near-full shuffle.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    words = _words(text)
    if not words:
        return text
    keys = np.arange(len(words)) + _rng(rng).uniform(0, window, size=len(words))
    return " ".join(words[i] for i in np.argsort(keys, kind="stable"))


# ----------------------------------------------------------------------------- configured views
# Small frozen dataclasses: callable as view(text, rng), with a stable repr (used in the trainer's
# run-cache key and printed in notebooks).


@dataclass(frozen=True)
class Identity:
    """The unchanged text (the SimCSE view: only the model's dropout differs)."""

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        _words(text)
        return text


@dataclass(frozen=True)
class WordDropout:
    """:func:`word_dropout` with a fixed ``p``."""

    p: float = 0.1

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        return word_dropout(text, self.p, rng)


@dataclass(frozen=True)
class SpanCrop:
    """:func:`span_crop` with fixed ratio bounds."""

    min_ratio: float = 0.1
    max_ratio: float = 0.5

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        return span_crop(text, self.min_ratio, self.max_ratio, rng)


@dataclass(frozen=True)
class WordSwap:
    """:func:`word_swap` with a fixed number of swaps."""

    n_swaps: int = 1

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        return word_swap(text, self.n_swaps, rng)


@dataclass(frozen=True)
class WordShuffle:
    """:func:`word_shuffle` with a fixed window."""

    window: int = 3

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        return word_shuffle(text, self.window, rng)


@dataclass(frozen=True)
class Compose:
    """Apply several views in order, sharing one generator, e.g. ``Compose((SpanCrop(), WordDropout()))``."""

    steps: tuple = ()

    def __post_init__(self):
        if not all(callable(s) for s in self.steps):
            raise TypeError("every step of Compose must be callable as step(text, rng)")
        object.__setattr__(self, "steps", tuple(self.steps))

    def __call__(self, text: str, rng: np.random.Generator | int = 0) -> str:
        gen = _rng(rng)
        for step in self.steps:
            text = step(text, gen)
        return text


View = Callable[[str, np.random.Generator], str]


def make_views(texts: Sequence[str], view: View, view2: View | None = None,
               seed: int = 0) -> tuple[list[str], list[str]]:
    """Two augmented views of every text: ``(view(t), view2(t))`` for each ``t`` in ``texts``.

    Args:
        texts: N unlabelled texts.
        view: a callable ``(text, rng) -> text`` such as :class:`SpanCrop` or :class:`Compose`.
        view2: the second view; default ``view`` again (two *independent* draws, as Contriever crops
            two spans of one document). Pass :class:`Identity` to keep the original as the anchor.
        seed: one generator seeded with it serves every draw, in order, so the same call returns
            the same pairs.

    Returns:
        ``(anchors, positives)``: two lists of N strings, for
        :class:`~embedlessons.training.PairDataset` and in-batch InfoNCE.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    if len(texts) == 0:
        raise ValueError("texts is empty: nothing to augment")
    if not callable(view) or (view2 is not None and not callable(view2)):
        raise TypeError("view and view2 must be callables (text, rng) -> text")
    view2 = view if view2 is None else view2
    gen = np.random.default_rng(seed)
    anchors, positives = [], []
    for text in texts:
        anchors.append(view(text, gen))
        positives.append(view2(text, gen))
    return anchors, positives
