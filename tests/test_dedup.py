"""Duplicates and leakage (embedlessons.dedup): LSH finds exactly the pairs a brute-force Jaccard search finds,
on real STS-B sentences with planted edits; SciFact's leaked training claims are found; bad input errors."""
import itertools

import numpy as np
import pytest

from embedlessons.data import load_retrieval, load_sts
from embedlessons.dedup import (exact_duplicates, jaccard, minhash_signatures, near_duplicates, normalize_text,
                                shingles, split_overlap)
from embedlessons.experiments.part3 import leaked_queries


def test_normalisation_and_exact_groups():
    assert normalize_text("  The CAT, sat!\n") == "the cat sat"
    assert exact_duplicates(["A cat.", "dogs", "a  CAT", "Dogs!", "bird"]) == [[0, 2], [1, 3]]
    assert shingles("a b c d", 3) == {"a b c", "b c d"} and shingles("a b", 3) == {"a b"} and shingles("...") == set()


def test_minhash_agreement_estimates_jaccard():
    a = shingles(" ".join(f"w{i}" for i in range(60)))
    b = shingles(" ".join(f"w{i}" for i in range(15, 75)))
    sig = minhash_signatures([a, b], num_perm=512, seed=1)
    assert abs(np.mean(sig[0] == sig[1]) - jaccard(a, b)) < 0.06          # J = 43/73 ~ 0.59


def test_lsh_finds_what_brute_force_finds_on_real_sentences():
    sts = load_sts("stsb", "test")
    texts = sts.sentences1[:300]
    planted = []
    for k in range(0, 40, 4):                              # copies in other case and punctuation: Jaccard 1
        texts.append(texts[k].upper().replace(" ", "  ") + "!")
        planted.append((k, len(texts) - 1))
    sets = [shingles(t) for t in texts]
    brute = {(i, j) for i, j in itertools.combinations(range(len(texts)), 2)
             if sets[i] and sets[j] and jaccard(sets[i], sets[j]) >= 0.6}
    found = near_duplicates(texts, threshold=0.6)
    assert {(i, j) for i, j, _ in found} == brute
    assert all(jaccard(sets[i], sets[j]) == pytest.approx(s) for i, j, s in found)
    assert set(planted) <= brute and len(found) > len(planted)      # the copies, and real near duplicates


def test_split_overlap_finds_scifact_leaked_claims():
    train, test = load_retrieval("scifact", "train"), load_retrieval("scifact", "test")
    tq, eq = list(train.queries), list(test.queries)
    out = split_overlap([train.queries[q] for q in tq], [test.queries[q] for q in eq])
    assert {tq[i] for i, _ in out["exact"]} == leaked_queries(train, test) and len(out["exact"]) >= 2
    assert all(s >= 0.8 for *_, s in out["near"])


@pytest.mark.parametrize("call, message", [
    (lambda: near_duplicates(["a"], threshold=0), r"threshold must be in \(0, 1\]"),
    (lambda: near_duplicates(["a"], bands=5), r"bands must divide num_perm \(64\)"),
    (lambda: shingles("a", n=0), r"n must be a positive int"),
    (lambda: minhash_signatures([{"a"}], num_perm=0), r"num_perm must be a positive int"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    with pytest.raises(TypeError, match="expected a string"):
        normalize_text(None)
