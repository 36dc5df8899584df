"""Training pairs without labels, made from a corpus itself (section 5.2).

- :func:`title_abstract_pairs`: a document's title as the query, its text as the positive (the title-body
  pairs that E5's CCPairs and many pre-training mixes harvest at scale, Wang et al. 2022).
- :func:`inverse_cloze_pairs`: the inverse cloze task (Lee, Chang & Toutanova 2019): one sentence of a passage
  as a pseudo-query and the passage around it as the positive; with probability ``1 - keep_probability`` (0.9
  in the paper) the sentence is removed from the passage, so the model cannot match it word for word.

Both return a :class:`~embedlessons.training.PairDataset`, ready for in-batch InfoNCE.

    >>> from embedlessons.data import load_retrieval
    >>> from embedlessons.unlabelled_pairs import inverse_cloze_pairs
    >>> pairs = inverse_cloze_pairs(load_retrieval("scifact", "train"), seed=0)     # doctest: +SKIP
"""
from __future__ import annotations

import re

import numpy as np

from .training import PairDataset

__all__ = ["split_sentences", "title_abstract_pairs", "inverse_cloze_pairs"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ., ! or ? followed by whitespace and a capital, digit or bracket
    (a plain rule: "e.g. the" stays whole, "Fig. 2" may split)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def title_abstract_pairs(ds, min_words: int = 3) -> PairDataset:
    """(title, text) of every document of ``ds`` (a :class:`~embedlessons.data.RetrievalDataset`) whose title has
    at least ``min_words`` words and whose text is not empty."""
    anchors, positives = [], []
    for doc in ds.corpus.values():
        if len(doc["title"].split()) >= min_words and doc["text"].strip():
            anchors.append(doc["title"])
            positives.append(doc["text"])
    if not anchors:
        raise ValueError(f"no document of {ds.name!r} has a title of >= {min_words} words and a text")
    return PairDataset(anchors, positives)


def inverse_cloze_pairs(ds, seed: int = 0, keep_probability: float = 0.1, min_sentences: int = 3,
                        pairs_per_doc: int = 1) -> PairDataset:
    """Inverse-cloze (pseudo-query sentence, rest of the passage) pairs from the documents' texts.

    Args:
        ds: a :class:`~embedlessons.data.RetrievalDataset` (only the corpus is used, never the queries or qrels).
        seed: seeds which sentences are drawn and which are kept in their passage.
        keep_probability: chance that the pseudo-query sentence stays in the passage (Lee et al.: 0.1).
        min_sentences: documents with fewer sentences are skipped (the rest would be too short).
        pairs_per_doc: distinct sentences drawn per document (at most its number of sentences).

    Returns:
        a :class:`~embedlessons.training.PairDataset`; the passage is the title (if any), then the sentences.
    """
    if not 0 <= keep_probability <= 1:
        raise ValueError(f"keep_probability must be in [0, 1], got {keep_probability}")
    if min_sentences < 2 or pairs_per_doc < 1:
        raise ValueError(f"need min_sentences >= 2 and pairs_per_doc >= 1, got {min_sentences}, {pairs_per_doc}")
    rng = np.random.default_rng(seed)
    anchors, positives = [], []
    for doc in ds.corpus.values():
        sentences = split_sentences(doc["text"])
        if len(sentences) < min_sentences:
            continue
        for i in rng.choice(len(sentences), min(pairs_per_doc, len(sentences)), replace=False):
            keep = rng.random() < keep_probability
            rest = sentences if keep else sentences[:i] + sentences[i + 1:]
            anchors.append(sentences[i])
            positives.append((doc["title"] + " " if doc["title"] else "") + " ".join(rest))
    if not anchors:
        raise ValueError(f"no document of {ds.name!r} has {min_sentences} or more sentences")
    return PairDataset(anchors, positives)
