"""Cross-encoder training (embedlessons.reranking) and the recorded reranker of sections 1.2 and 3.2."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlessons.models import CrossEncoder, small_bert
from embedlessons.reranking import labelled_pairs, score_pairs, train_cross_encoder

pytestmark = pytest.mark.usefixtures("one_thread", "private_cache")

QUERIES = {"q1": "a plane takes off", "q2": "a man plays the guitar", "q3": "rain falls on the city"}
CORPUS = {"d1": "an aircraft leaves the runway", "d2": "music on a guitar", "d3": "wet streets downtown",
          "d4": "a recipe for bread", "d5": "stock prices fell", "d6": "a cat sleeps"}


def _cross(seed=0, max_length=32):
    bert = small_bert(seed=seed)
    return CrossEncoder(bert.transformer, bert.tokenizer, max_length=max_length, seed=seed)


def test_labelled_pairs_counts_labels_and_errors():
    rows = [("q1", "d1"), ("q2", "d2")]
    cands = {"q1": ["d4", "d5", "d6"], "q2": ["d5", "d6"]}
    ex = labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=2, seed=0)
    assert [y for _, _, y in ex] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert ex[0] == (QUERIES["q1"], CORPUS["d1"], 1.0)
    assert {d for _, d, y in ex[1:3]} <= {CORPUS[d] for d in cands["q1"]}
    assert ex == labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=2, seed=0)      # seeded
    assert len(labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=0)) == 2
    with pytest.raises(ValueError, match="fewer than negatives=3"):
        labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=3)
    with pytest.raises(KeyError, match="missing"):
        labelled_pairs(QUERIES, CORPUS, [("q9", "d1")], cands)
    with pytest.raises(ValueError, match=">= 0"):
        labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=-1)


def test_forward_is_the_head_on_the_joint_cls_vector_and_score_pairs_agrees():
    cross = _cross().eval()
    queries, docs = ["a plane takes off", "rain"], ["an aircraft leaves the runway", "a cat sleeps"]
    batch = cross.tokenizer(queries, docs, padding=True, truncation="longest_first", max_length=32,
                            return_tensors="pt")
    with torch.no_grad():
        expected = cross.head(cross.transformer(**batch).last_hidden_state[:, 0]).squeeze(-1)
        got = cross(queries, docs)
    torch.testing.assert_close(got, expected)
    pairs = list(zip(queries, docs))
    np.testing.assert_allclose(score_pairs(cross, pairs, batch_size=1), got.numpy(), atol=1e-5)
    np.testing.assert_allclose(cross.score(queries[0], docs), score_pairs(cross, [(queries[0], d) for d in docs]),
                               atol=1e-5)
    assert score_pairs(cross, []).shape == (0,)
    with pytest.raises(ValueError, match="same length"):
        cross(["a"], ["b", "c"])


def test_a_long_query_is_cut_instead_of_failing():
    cross = _cross(max_length=16).eval()
    assert np.isfinite(cross.score("word " * 40, ["short", "another " * 30])).all()


def test_first_step_loss_is_binary_cross_entropy_and_training_learns_the_pairs():
    """The reported loss of step 1 is BCE of the untouched model's logits (dropout off), and 60 steps on a
    tiny set rank every query's own document above the others: a broken loss or update would fail both."""
    rows = [(q, d) for q, d in zip(QUERIES, ["d1", "d2", "d3"])]
    cands = {q: [d for d in CORPUS if d != own] for q, own in rows}
    examples = labelled_pairs(QUERIES, CORPUS, rows, cands, negatives=5, seed=0)
    cross = _cross()
    for m in cross.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        logits = cross([q for q, _, _ in examples], [d for _, d, _ in examples])
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([y for _, _, y in examples])).item()
    losses = train_cross_encoder(cross, examples, epochs=60, batch_size=len(examples), lr=1e-3, warmup_ratio=0.0)
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert not cross.training
    for q, own in rows:
        scores = dict(zip(CORPUS, cross.score(QUERIES[q], list(CORPUS.values()))))
        assert max(scores, key=scores.get) == own, (q, scores)


def test_bad_training_input_is_refused():
    cross = _cross()
    with pytest.raises(ValueError, match="no training examples"):
        train_cross_encoder(cross, [])
    with pytest.raises(ValueError, match="label must be in"):
        train_cross_encoder(cross, [("q", "d", 2.0)])
    with pytest.raises(ValueError, match=r"\(query: str"):
        train_cross_encoder(cross, [("q", 3, 1.0)])


def test_recorded_scorer_reads_scores_and_names_a_missing_pair(tiny_recorded_result):
    from embedlessons.experiments.part1 import recorded_scorer

    result, _ = tiny_recorded_result("cross_encoder_scifact")
    assert set(result["per_query"]) == {"BM25", "MiniLM", "BM25 -> cross-encoder", "MiniLM -> cross-encoder"}
    qid, scored = next(iter(result["rerank_scores"].items()))
    ids = list(scored)
    np.testing.assert_allclose(recorded_scorer("rerank", result)(qid, ids), [scored[d] for d in ids])
    with pytest.raises(KeyError, match="first stage differs"):
        recorded_scorer("rerank", result)(qid, ids + ["not-a-doc"])
    with pytest.raises(KeyError, match="no candidates"):
        recorded_scorer("teacher", result)("not-a-query", ids)
    with pytest.raises(ValueError, match="'rerank' or 'teacher'"):
        recorded_scorer("other", result)


def _library_twin(cross, folder):
    """sentence-transformers' CrossEncoder holding the same weights as ``cross``.

    The library's BERT reranker reads the [CLS] vector through BERT's pooler (a dense layer and tanh) before its
    linear classifier; ours reads [CLS] directly. The twin's pooler is set to the identity, so the two compute
    the same function, and its classifier is our head."""
    from sentence_transformers import CrossEncoder as LibraryCrossEncoder
    from transformers import BertForSequenceClassification

    config = copy.deepcopy(cross.transformer.config)
    config.num_labels = 1
    twin = BertForSequenceClassification(config)
    missing, unexpected = twin.bert.load_state_dict(cross.transformer.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing), (missing, unexpected)
    twin.classifier.load_state_dict(cross.head.state_dict())
    twin.save_pretrained(folder)
    cross.tokenizer.save_pretrained(folder)
    library = LibraryCrossEncoder(str(folder), max_length=cross.max_length, device="cpu", local_files_only=True)
    pooler = library.model.bert.pooler
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]))
        pooler.dense.bias.zero_()
    pooler.activation = torch.nn.Identity()
    return library


def test_logits_loss_and_gradient_equal_sentence_transformers(tmp_path):
    """Our cross-encoder against sentence-transformers' CrossEncoder with the same weights: the same logits for
    pairs whose joint length exceeds max_length (both cut the longer text first), and for a labelled batch the
    same BinaryCrossEntropyLoss value and the same gradient in the shared weights."""
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    cross = _cross(max_length=24).eval()
    library = _library_twin(cross, tmp_path / "twin")
    library.model.eval()
    queries = ["a plane takes off", "rain " * 30, "a man plays the guitar"]
    docs = ["an aircraft leaves the runway " * 5, "wet streets downtown", "stock prices fell"]
    labels = torch.tensor([1.0, 0.0, 0.0])

    expected = library.predict(list(zip(queries, docs)), activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    np.testing.assert_allclose(score_pairs(cross, list(zip(queries, docs))), expected, atol=1e-5)

    ours = F.binary_cross_entropy_with_logits(cross(queries, docs), labels)    # eval mode: dropout off in both
    ours.backward()
    theirs = BinaryCrossEntropyLoss(library)([queries, docs], labels)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    shared = {"head.weight": library.model.classifier.weight,
              "transformer.embeddings.word_embeddings.weight": library.model.bert.embeddings.word_embeddings.weight,
              "transformer.encoder.layer.0.attention.self.query.weight":
                  library.model.bert.encoder.layer[0].attention.self.query.weight}
    params = dict(cross.named_parameters())
    for name, twin_param in shared.items():
        torch.testing.assert_close(params[name].grad, twin_param.grad, atol=1e-6, rtol=1e-4)
