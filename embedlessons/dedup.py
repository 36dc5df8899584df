"""Duplicates and leakage: exact and near-duplicate texts within a set, and overlap between splits.

- **Exact duplicates** compare texts after :func:`normalize_text` (case, whitespace and punctuation ignored).
- **Near duplicates** compare sets of word n-grams ("shingles") by their Jaccard similarity
  ``|A & B| / |A | B|``. Comparing every pair costs O(n^2); MinHash (Broder 1997) summarises each set by
  ``num_perm`` minima of random hash functions (salted splitmix64), so that two sets agree on one minimum with probability equal
  to their Jaccard similarity, and locality-sensitive hashing (LSH, bands of ``rows`` minima) turns that into
  candidate pairs; every candidate is then checked with its exact Jaccard similarity, so the pairs returned
  are exact, and only a pair that no band catches can be missed (probability ``(1 - J^rows)^bands``).
- **Leakage**: :func:`split_overlap` finds test texts that occur, exactly or nearly, in the training split.

    >>> from embedlessons.dedup import near_duplicates
    >>> near_duplicates(["a cat sat on the mat today", "a cat sat on the mat today!", "dogs bark"], 0.8)
    [(0, 1, 1.0)]
"""
from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

__all__ = ["normalize_text", "exact_duplicates", "shingles", "jaccard", "minhash_signatures", "near_duplicates",
           "split_overlap"]

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower-cased words joined by single spaces (punctuation and extra whitespace dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return " ".join(_WORD.findall(text.lower()))


def exact_duplicates(texts: Sequence[str]) -> list[list[int]]:
    """Groups (>= 2 indices, in order) of texts that are equal after :func:`normalize_text`."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[normalize_text(t)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def shingles(text: str, n: int = 3) -> set[str]:
    """The word n-grams of the normalised text (the whole text when it has fewer than n words)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    words = normalize_text(text).split()
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """``|a & b| / |a | b|`` (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters nearby inputs (arithmetic wraps mod 2^64)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def minhash_signatures(sets: Sequence[set[str]], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """MinHash signatures [n, num_perm] (uint64): for hash function k, the minimum over the set's shingles of
    ``mix(crc32(shingle) XOR salt_k)``, with random salts and splitmix64's mixing as ``mix``; an empty set gets
    the maximum value everywhere. Two sets agree on hash k with probability (about) their Jaccard similarity."""
    if not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
    salts = np.random.default_rng(seed).integers(0, np.iinfo(np.int64).max, size=num_perm).astype(np.uint64)
    out = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, s in enumerate(sets):
            if s:
                x = np.array([zlib.crc32(t.encode("utf-8")) for t in s], dtype=np.uint64)[:, None]
                out[i] = _mix64(x ^ salts[None, :]).min(axis=0)
    return out


def _candidates(sig: np.ndarray, bands: int) -> set[tuple[int, int]]:
    rows = sig.shape[1] // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, row in enumerate(sig[:, band * rows:(band + 1) * rows]):
            buckets[row.tobytes()].append(i)
        for members in buckets.values():
            if 1 < len(members) <= 1000:         # a giant bucket is empty texts or boilerplate: skip it
                pairs.update((members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members)))
    return pairs


def near_duplicates(texts: Sequence[str], threshold: float = 0.8, n: int = 3, num_perm: int = 64, bands: int = 16,
                    seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, jaccard)`` with i < j whose word-n-gram Jaccard similarity is >= ``threshold``, sorted.

    Candidates come from MinHash LSH (``bands`` bands of ``num_perm / bands`` rows); each is verified exactly.
    With the defaults a pair at Jaccard 0.8 is missed with probability ``(1 - 0.8^4)^16``, about 1e-6.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if bands < 1 or num_perm % bands:
        raise ValueError(f"bands must divide num_perm ({num_perm}), got {bands}")
    sets = [shingles(t, n) for t in texts]
    sig = minhash_signatures(sets, num_perm, seed)
    out = []
    for i, j in _candidates(sig, bands):
        if not sets[i] or not sets[j]:
            continue
        s = jaccard(sets[i], sets[j])
        if s >= threshold:
            out.append((i, j, s))
    return sorted(out)


def split_overlap(train_texts: Sequence[str], test_texts: Sequence[str], threshold: float = 0.8,
                  n: int = 3) -> dict[str, list]:
    """Test texts that also occur in the training texts: ``{"exact": [(i_train, j_test)], "near": [(i_train,
    j_test, jaccard)]}`` (exact after :func:`normalize_text`; near: Jaccard >= threshold, not exact)."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(train_texts):
        index[normalize_text(t)].append(i)
    exact = [(i, j) for j, t in enumerate(test_texts) for i in index.get(normalize_text(t), [])]
    both = list(train_texts) + list(test_texts)
    k = len(train_texts)
    exact_set = set(exact)
    near = [(i, j - k, s) for i, j, s in near_duplicates(both, threshold, n)
            if i < k <= j and (i, j - k) not in exact_set]
    return {"exact": exact, "near": near}
