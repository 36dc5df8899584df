"""Part 1 checkers: Exercise 1 (a mean-pooled, normalised bi-encoder) and two "More to try" items
(section 1.1's comparison on SICK, and pooling a random-initialised BERT)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from .common import CheckResult

__all__ = ["check_bi_encoder", "EXERCISE_1_SENTENCES", "check_sick_comparison", "sick_reference",
           "check_untrained_pooling", "untrained_pooling_reference", "SICK_METHODS", "POOLING_MODES"]


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


# ============================================================================= "More to try" checkers
#: The methods of section 1.1's STS comparison, as the keys of an answer to :func:`check_sick_comparison`.
SICK_METHODS = ("word overlap", "BM25", "MiniLM")
#: The poolings of section 1.2, as the keys of an answer to :func:`check_untrained_pooling`.
POOLING_MODES = ("mean", "cls", "max")


def _check_correlations(answer, keys: tuple[str, ...], what: str) -> CheckResult | None:
    """A CheckResult naming what is wrong with the *form* of an answer, or None when it is well formed."""
    example = "{" + ", ".join(f'"{k}": ...' for k in keys) + "}"
    if answer is None:
        return CheckResult(False, f"fill in {what} as a dict {example}")
    if not isinstance(answer, Mapping):
        return CheckResult(False, f"expected a dict {example}, got {type(answer).__name__}")
    missing, unknown = [k for k in keys if k not in answer], [k for k in answer if k not in keys]
    if missing or unknown:
        return CheckResult(False, f"expected exactly the keys {list(keys)}; missing {missing}, unknown {unknown}")
    for key in keys:
        try:
            value = float(answer[key])
        except (TypeError, ValueError):
            return CheckResult(False, f"{key!r} must be a number (a Spearman correlation), got {answer[key]!r}")
        if not np.isfinite(value):
            return CheckResult(False, f"{key!r} is not a finite number: {value}")
        if abs(value) > 1:
            return CheckResult(False, f"{key!r} = {value:g} is outside [-1, 1]: give correlations as fractions "
                                      "(MTEB's tables multiply them by 100)")
    return None


def _compare(answer: Mapping[str, float], reference: Mapping[str, Mapping[str, float]], atol: float,
             mistakes: Mapping[str, str]) -> CheckResult:
    """Compare each answered value with ``reference[key]["right"]``; name the first mistake it matches."""
    wrong = []
    for key, value in answer.items():
        value, expected = float(value), reference[key]["right"]
        if abs(value - expected) <= atol:
            continue
        named = [mistakes[m] for m in mistakes if m in reference[key] and abs(value - reference[key][m]) <= atol]
        if named:
            return CheckResult(False, f"{key!r} matches a common mistake: {named[0]}")
        wrong.append(f"{key!r}: yours {value:.4f}, expected {expected:.4f}")
    if wrong:
        return CheckResult(False, "these values differ from the reference (to within "
                                  f"{atol:g}): " + "; ".join(wrong))
    return CheckResult(True, "all values equal the reference: " +
                       ", ".join(f"{k} {reference[k]['right']:.3f}" for k in answer))


def sick_reference(model=None, data=None, max_length: int = 64) -> dict[str, dict[str, float]]:
    """Section 1.1's three STS scores on SICK test: per method, Spearman ("right") and Pearson.

    Args:
        model: the bi-encoder (default all-MiniLM-L6-v2).
        data: :class:`~embedlessons.data.ScoredPairs` (default ``load_sts("sick", "test")``).
        max_length: token limit for MiniLM (section 1.1 uses the CPU profile's 64).
    """
    from ..data import load_sts
    from ..evaluation import pearson, spearman
    from ..lexical import bm25_pair_scores, word_overlap_scores
    from ..models import load_model

    data = data if data is not None else load_sts("sick", "test")
    model = model or load_model()
    a = model.encode(data.sentences1, max_length=max_length, progress=False)
    b = model.encode(data.sentences2, max_length=max_length, progress=False)
    scores = {"word overlap": word_overlap_scores(data.sentences1, data.sentences2),
              "BM25": bm25_pair_scores(data.sentences1, data.sentences2),
              "MiniLM": (a * b).sum(axis=1)}
    return {m: {"right": spearman(s, data.scores), "pearson": pearson(s, data.scores)} for m, s in scores.items()}


def check_sick_comparison(answer: Mapping[str, float] | None, model=None, data=None, atol: float = 1e-3,
                          max_length: int = 64) -> CheckResult:
    """"Word overlap on SICK": Spearman of word overlap, BM25 and MiniLM with the SICK test scores.

    ``answer`` is ``{"word overlap": ..., "BM25": ..., "MiniLM": ...}`` (correlations as fractions, e.g.
    0.58; to within ``atol``, so values rounded to 3 decimals pass). The form of the answer is checked
    before anything is computed; then :func:`sick_reference` (``model``, ``data``, ``max_length``) gives
    the expected values.
    """
    problem = _check_correlations(answer, SICK_METHODS, "your three Spearman correlations on SICK test")
    if problem is not None:
        return problem
    reference = sick_reference(model=model, data=data, max_length=max_length)
    result = _compare(answer, reference, atol, {"pearson": "Pearson correlation instead of Spearman"})
    if result.passed:
        gap = reference["MiniLM"]["right"] - reference["word overlap"]["right"]
        result.message += f"; MiniLM - word overlap = {gap:.3f} (compare with STS-B in section 1.1)"
    return result


def untrained_pooling_reference(data=None, seed: int = 0, max_length: int = 64,
                                batch_size: int = 64) -> dict[str, dict[str, float]]:
    """STS Spearman of a random-initialised 6-layer, 384-wide BERT pooled three ways.

    The model is ``small_bert(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536,
    seed=seed)``; each pooling's cosine ("right"), and two slips for diagnosis: Pearson instead of
    Spearman, and the dot product of unnormalised vectors instead of the cosine. Token vectors are
    computed once and pooled three ways (``embedlessons.models.pool``, padding ignored).

    Args:
        data: :class:`~embedlessons.data.ScoredPairs` (default ``load_sts("stsb", "test")``).
        seed: the model's initialisation seed.
        max_length, batch_size: tokenisation limit and texts per forward pass.
    """
    from ..data import load_sts
    from ..evaluation import pearson, spearman
    from ..models import pool, small_bert

    data = data if data is not None else load_sts("stsb", "test")
    model = small_bert(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536, seed=seed).eval()
    texts = list(data.sentences1) + list(data.sentences2)
    order = np.argsort([len(t) for t in texts], kind="stable")          # similar lengths share a batch
    pooled = {mode: np.zeros((len(texts), model.dim), dtype=np.float32) for mode in POOLING_MODES}
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = model.tokenize([texts[i] for i in idx], max_length=max_length)
            tokens = model.token_embeddings(batch)
            for mode in POOLING_MODES:
                pooled[mode][idx] = pool(tokens, batch["attention_mask"], mode).numpy()
    n, out = len(data.scores), {}
    for mode, vectors in pooled.items():
        a, b = vectors[:n].astype(np.float64), vectors[n:].astype(np.float64)
        dot = (a * b).sum(axis=1)
        cosine = dot / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out[mode] = {"right": spearman(cosine, data.scores), "pearson": pearson(cosine, data.scores),
                     "dot": spearman(dot, data.scores)}
    return out


def check_untrained_pooling(answer: Mapping[str, float] | None, data=None, seed: int = 0, atol: float = 1e-3,
                            max_length: int = 64) -> CheckResult:
    """"Pooling an untrained model": STS-B test Spearman of a random-initialised BERT, pooled three ways.

    ``answer`` is ``{"mean": ..., "cls": ..., "max": ...}``: the Spearman correlation of the cosines with
    the gold scores, for ``small_bert(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536,
    seed=seed)`` (pass the ``seed`` you used). The form of the answer is checked before anything is
    computed; then :func:`untrained_pooling_reference` gives the expected values.
    """
    problem = _check_correlations(answer, POOLING_MODES, "your three Spearman correlations")
    if problem is not None:
        return problem
    reference = untrained_pooling_reference(data=data, seed=seed, max_length=max_length)
    return _compare(answer, reference, atol, {"pearson": "Pearson correlation instead of Spearman",
                                              "dot": "dot product of unnormalised vectors instead of the cosine"})
