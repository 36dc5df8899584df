"""Pairs without labels (embedlessons.unlabelled_pairs) from the real SciFact corpus: title -> abstract and
inverse-cloze pairs, with the paper's removal rate, seeded, and never touching queries or judgements."""
import numpy as np
import pytest

from embedlessons.data import RetrievalDataset, load_retrieval
from embedlessons.unlabelled_pairs import inverse_cloze_pairs, split_sentences, title_abstract_pairs


@pytest.fixture(scope="module")
def scifact():
    return load_retrieval("scifact", "train")


def test_sentences_split_on_ends_followed_by_a_capital():
    assert split_sentences("Cells divide. Then 2 copies exist! Is it so? yes e.g. this.") == [
        "Cells divide.", "Then 2 copies exist!", "Is it so? yes e.g. this."]


def test_title_abstract_pairs_cover_the_corpus(scifact):
    pairs = title_abstract_pairs(scifact)
    assert len(pairs) > 0.9 * len(scifact.corpus)
    first = next(d for d in scifact.corpus.values() if len(d["title"].split()) >= 3)
    assert pairs[0] == (first["title"], first["text"])


def test_inverse_cloze_removes_the_sentence_nine_times_in_ten(scifact):
    pairs = inverse_cloze_pairs(scifact, seed=0)
    assert len(pairs) > 0.8 * len(scifact.corpus)
    kept = np.mean([a in p for a, p in (pairs[i] for i in range(len(pairs)))])
    assert 0.07 < kept < 0.13                                 # keep_probability 0.1 (Lee et al. 2019)
    assert [pairs[i] for i in range(5)] == [inverse_cloze_pairs(scifact, seed=0)[i] for i in range(5)]
    assert [pairs[i] for i in range(5)] != [inverse_cloze_pairs(scifact, seed=1)[i] for i in range(5)]
    assert all(pairs[i][0] and pairs[i][1] for i in range(len(pairs)))
    assert not set(scifact.queries.values()) & {pairs[i][0] for i in range(len(pairs))}   # no query used
    always = inverse_cloze_pairs(scifact, seed=0, keep_probability=1.0)
    assert all(a in p for a, p in (always[i] for i in range(50)))


def test_bad_input_is_refused():
    tiny = RetrievalDataset("tiny", "test", {"d": {"title": "", "text": "One sentence only."}}, {}, {})
    with pytest.raises(ValueError, match="has 3 or more sentences"):
        inverse_cloze_pairs(tiny)
    with pytest.raises(ValueError, match="title of >= 3 words"):
        title_abstract_pairs(tiny)
    with pytest.raises(ValueError, match="keep_probability must be in"):
        inverse_cloze_pairs(tiny, keep_probability=2)
