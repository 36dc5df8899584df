"""Part 1 checker: Exercise 1, a mean-pooled, normalised bi-encoder."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .common import CheckResult

__all__ = ["check_bi_encoder", "EXERCISE_1_SENTENCES"]


# Sentences of very different lengths, so that padding changes the result of a careless mean.
EXERCISE_1_SENTENCES = [
    "A dog runs.",
    "The committee postponed its decision on the new bridge until the engineers had finished their report.",
    "Cats sleep most of the day.",
    "Embedding models map each sentence to a single vector, and similar sentences end up close together.",
    "Rain.",
    "She plays the violin in a small orchestra on weekends.",
]


def _pooled_variants(model, sentences: list[str]) -> dict[str, np.ndarray]:
    """Outputs of the right answer and of the common mistakes, for diagnosis."""
    from ..models import pool

    with torch.no_grad():
        batch = model.tokenize(sentences)
        tokens = model.token_embeddings(batch)
        mask = batch["attention_mask"]
        mean = pool(tokens, mask, "mean")
        variants = {
            "right": torch.nn.functional.normalize(mean, dim=-1),
            "not normalised": mean,
            "CLS pooling instead of mean pooling": torch.nn.functional.normalize(pool(tokens, mask, "cls"), dim=-1),
            "max pooling instead of mean pooling": torch.nn.functional.normalize(pool(tokens, mask, "max"), dim=-1),
            "mean over padding tokens too (use the attention mask)":
                torch.nn.functional.normalize(tokens.mean(1), dim=-1),
        }
    return {k: v.numpy() for k, v in variants.items()}


def check_bi_encoder(encode_fn: Callable[[list[str]], object], model=None, atol: float = 1e-4) -> CheckResult:
    """Exercise 1: ``encode_fn(sentences) -> [N, 384]`` mean-pooled, L2-normalised MiniLM embeddings.

    The reader's function gets a batch of sentences of different lengths (so padding matters) and
    must return an array or tensor [N, 384] equal (to ``atol``) to the reference bi-encoder.
    """
    from ..models import load_model

    model = model or load_model()
    sentences = EXERCISE_1_SENTENCES
    try:
        out = encode_fn(list(sentences))
    except NotImplementedError:
        return CheckResult(False, "the function raises NotImplementedError: fill in the body")
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    out = np.asarray(out, dtype=np.float32)
    expected = (len(sentences), model.dim)
    if out.shape != expected:
        return CheckResult(False, f"expected an array of shape {expected} (one row per sentence), got {out.shape}")
    if not np.isfinite(out).all():
        return CheckResult(False, "the output contains NaN or infinite values")
    variants = _pooled_variants(model, sentences)
    if np.allclose(out, variants["right"], atol=atol):
        return CheckResult(True, "mean pooling over real tokens, L2-normalised: equal to the reference bi-encoder")
    for mistake, vec in variants.items():
        if mistake != "right" and np.allclose(out, vec, atol=atol):
            return CheckResult(False, f"your vectors match a common mistake: {mistake}")
    worst = float(np.abs(out - variants["right"]).max())
    return CheckResult(False, f"the vectors differ from the reference (largest difference {worst:.3g}); "
                              "check the pooling, the attention mask and the normalisation")
