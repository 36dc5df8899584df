"""Recipes of section 5.8's projects: a start on a Chinese embedding model.

MiniLM's vocabulary is English: most Chinese characters become ``[UNK]``
(:func:`embedlessons.vocab.unknown_token_share`). :func:`chinese_start` builds a character vocabulary from
the Chinese *training* sets, trains a small BERT from scratch on OCNLI (premise, entailed hypothesis,
contradicting hypothesis) triplets with in-batch InfoNCE plus the hard negative, and scores it on the Chinese
STS-B test set (Spearman) before and after, beside MiniLM. It is where the project starts, not where it
ends: the model is small and the budget a minute.
"""
from __future__ import annotations

import functools

import numpy as np

from ..data import load_sts, load_triplets
from ..losses import in_batch_info_nce
from ..models import load_model, small_bert
from ..stats import paired_bootstrap_spearman
from ..training import TrainConfig, train, triplets_from_nli
from ..vocab import character_tokenizer, unknown_token_share

__all__ = ["chinese_start", "sts_cosines"]


def sts_cosines(model, pairs, max_length: int = 64) -> np.ndarray:
    """Cosine of each sentence pair [N] (vectors normalised here, whatever the model does)."""
    a = model.encode(pairs.sentences1, max_length=max_length, progress=False)
    b = model.encode(pairs.sentences2, max_length=max_length, progress=False)
    a /= np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b /= np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(axis=1)


def chinese_start(steps: int = 150, batch_size: int = 64, lr: float = 5e-4, seed: int = 0, num_layers: int = 2,
                  hidden_size: int = 128, max_length: int = 48, min_count: int = 2, max_triplets: int | None = None,
                  cache: bool = True) -> dict:
    """Train a small Chinese bi-encoder from scratch and score it on the Chinese STS-B test set.

    Args:
        steps, batch_size, lr, seed: the training run (AdamW, 10% warm-up, in-batch InfoNCE at t = 0.05 with
            each triplet's contradiction as a hard negative).
        num_layers, hidden_size: the small BERT (2 heads).
        max_length: token limit (one token per character).
        min_count: characters rarer than this in the training texts become ``[UNK]``.
        max_triplets: cap the OCNLI triplets (a seeded sample), for tests.
        cache: reuse an identical finished run (the package's run cache).

    Returns:
        ``{"settings", "unknown_share": {tokenizer: share}, "vocab_size", "spearman": {model: rho},
        "trained_minus_untrained": paired bootstrap dict, "trained_minus_minilm": ..., "history": losses}``.
    """
    triplets = load_triplets("ocnli", "train")
    if max_triplets is not None:
        keep = np.random.default_rng(seed).permutation(len(triplets))[:max_triplets]
        triplets = type(triplets)(triplets.name, triplets.split, *[[col[i] for i in keep] for col in
                                  (triplets.anchors, triplets.positives, triplets.negatives)])
    sts_train, sts_test = load_sts("stsb_zh", "train"), load_sts("stsb_zh", "test")
    corpus = triplets.anchors + triplets.positives + triplets.negatives + sts_train.sentences1 + sts_train.sentences2
    tokenizer = character_tokenizer(corpus, min_count=min_count)
    minilm = load_model("all-MiniLM-L6-v2")
    test_texts = sts_test.sentences1 + sts_test.sentences2
    unknown = {"MiniLM (English WordPiece)": unknown_token_share(minilm.tokenizer, test_texts),
               "character vocabulary": unknown_token_share(tokenizer, test_texts)}

    model = small_bert(num_layers=num_layers, hidden_size=hidden_size, num_heads=2, intermediate_size=4 * hidden_size,
                       max_length=max_length, seed=seed, tokenizer=tokenizer)
    cos = {"MiniLM": sts_cosines(minilm, sts_test, max_length), "untrained": sts_cosines(model, sts_test, max_length)}
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed)
    history = train(model, triplets_from_nli(triplets), functools.partial(in_batch_info_nce, temperature=0.05),
                    config, cache=cache, progress=False)
    cos["trained"] = sts_cosines(model, sts_test, max_length)
    from ..evaluation import spearman

    return {"settings": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "num_layers": num_layers,
                         "hidden_size": hidden_size, "max_length": max_length, "min_count": min_count,
                         "triplets": len(triplets)},
            "unknown_share": unknown, "vocab_size": len(tokenizer),
            "spearman": {name: spearman(c, sts_test.scores) for name, c in cos.items()},
            "trained_minus_untrained": paired_bootstrap_spearman(cos["trained"], cos["untrained"], sts_test.scores),
            "trained_minus_minilm": paired_bootstrap_spearman(cos["trained"], cos["MiniLM"], sts_test.scores),
            "losses": [s["loss"] for s in history.steps], "model": model}
