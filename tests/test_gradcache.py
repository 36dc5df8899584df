"""GradCache (embedlessons.gradcache): the gradient of the big batch, exactly, with a small batch's saved
activations; gradient accumulation is a different loss. Tiny random BERTs, dropout on where it matters."""
import functools

import pytest
import torch

from embedlessons.gradcache import (SavedActivationMeter, accumulation_backward, full_batch_backward,
                                    gradcache_backward, saved_activation_bytes)
from embedlessons.losses import LearnableTemperature, in_batch_info_nce
from embedlessons.models import BiEncoder, small_bert

pytestmark = pytest.mark.usefixtures("one_thread")

B = 24
BOUND = 1e-5          # relative to the parameter's largest gradient entry; the gaps measured are 1e-8 to 1e-6
LOSS = functools.partial(in_batch_info_nce, temperature=0.05)
_WORDS = ("protein cell gene cancer risk trial dose mouse brain blood vitamin virus tumour receptor insulin "
          "obesity heart liver kidney bone").split()


def _texts(n, first, step, base):
    return [" ".join(_WORDS[(i * step + j) % len(_WORDS)] for j in range(base + (i * 7) % 5 + first))
            for i in range(n)]


QUERIES, DOCS, NEGS = _texts(B, 0, 3, 2), _texts(B, 2, 5, 6), _texts(B, 1, 11, 5)


@pytest.fixture(scope="module")
def model():
    return small_bert(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, max_length=32, seed=0)


def _grads(model, run, seed=1):
    """``run()`` from a fresh seed and zeroed gradients: (LossOutput, {name: grad})."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = run()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads


def _gaps(grads, ref):
    """Per parameter: largest |difference|, over the largest |gradient entry| of any parameter (not of this one:
    some gradients are zero in exact arithmetic, e.g. the attention key bias, as softmax ignores a constant
    added to every score, and are rounding noise)."""
    assert set(grads) == set(ref) and ref
    scale = max(float(g.abs().max()) for g in ref.values())
    return {n: float((grads[n] - ref[n]).abs().max()) / scale for n in ref}


# ------------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("mini_batch", [1, 5, 8, B, 100])
def test_gradcache_equals_the_big_batch_with_dropout_on(model, mini_batch):
    """Train mode: the reference embeds in the same chunks with every graph kept (same dropout masks from the
    same seed), then one backward of the full-batch loss."""
    model.train()
    ref_out, ref = _grads(model, lambda: full_batch_backward(model, [QUERIES, DOCS], LOSS, chunk=mini_batch))
    out, grads = _grads(model, lambda: gradcache_backward(model, [QUERIES, DOCS], LOSS, mini_batch))
    model.eval()
    gaps = _gaps(grads, ref)
    assert max(gaps.values()) < BOUND, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-6
    assert out.stats["mini_batches"] == -(-B // mini_batch)
    assert out.stats["accuracy"] == ref_out.stats["accuracy"]


def test_gradcache_equals_one_forward_of_the_whole_batch_in_eval_mode(model):
    ref_out, ref = _grads(model, lambda: full_batch_backward(model, [QUERIES, DOCS], LOSS))
    out, grads = _grads(model, lambda: gradcache_backward(model, [QUERIES, DOCS], LOSS, 4))
    assert max(_gaps(grads, ref).values()) < BOUND
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-6


def test_without_replaying_the_random_state_the_gradient_is_wrong(model):
    model.train()
    _, ref = _grads(model, lambda: full_batch_backward(model, [QUERIES, DOCS], LOSS, chunk=8))
    _, wrong = _grads(model, lambda: gradcache_backward(model, [QUERIES, DOCS], LOSS, 8, replay_rng=False))
    model.eval()
    assert max(_gaps(wrong, ref).values()) > 0.1        # measured 0.57: other dropout masks than the cache's


def test_random_state_afterwards_is_that_of_one_pass(model):
    """After GradCache the generator has advanced by one (chunked) forward pass, not two."""
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        passes = [model(model.tokenize(c[s:s + 8])) for c in (QUERIES, DOCS) for s in range(0, B, 8)]
    after_one_pass = torch.get_rng_state()
    torch.manual_seed(3)
    gradcache_backward(model, [QUERIES, DOCS], LOSS, 8)
    model.zero_grad(set_to_none=True)
    model.eval()
    assert len(passes) == 6 and torch.equal(torch.get_rng_state(), after_one_pass)


def test_three_columns_and_a_learnable_temperature(model):
    """Hard negatives as a third column; the loss's own parameter gets its gradient in step 2."""
    model.train()
    results = []
    for run in (lambda f: full_batch_backward(model, [QUERIES, DOCS, NEGS], f, chunk=6),
                lambda f: gradcache_backward(model, [QUERIES, DOCS, NEGS], f, 6)):
        temp = LearnableTemperature(0.07)
        out, grads = _grads(model, lambda: run(lambda a, p, n: in_batch_info_nce(a, p, n, temperature=temp())))
        results.append((out, grads, temp.log_t.grad.clone()))
    model.eval()
    (ref_out, ref, ref_t), (out, grads, t_grad) = results
    assert max(_gaps(grads, ref).values()) < BOUND
    torch.testing.assert_close(t_grad, ref_t, atol=1e-6, rtol=1e-5)
    assert abs(out.loss.item() - ref_out.loss.item()) < 1e-6


@pytest.mark.parametrize("hard_negative", [False, True])
def test_gradcache_equals_sentence_transformers_cached_mnrl_with_dropout_on(model, tmp_path, hard_negative):
    """The same weights in a SentenceTransformer (saved by BiEncoder.save); our forward shares its parameters.
    Both replay per-chunk random states and tokenise each chunk to its own longest text: identical masks."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    from transformers.utils import logging as hf_logging

    from embedlessons.experiments.part5_library import _hf

    model.save(tmp_path / "m")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()              # the unused pooler is reported missing
    try:
        theirs = st.SentenceTransformer(str(tmp_path / "m"), device="cpu").train()
    finally:
        hf_logging.set_verbosity(verbosity)
    ours = BiEncoder(_hf(theirs), theirs.tokenizer, max_length=model.max_length).train()
    columns = [QUERIES, DOCS, NEGS] if hard_negative else [QUERIES, DOCS]
    cached = CachedMultipleNegativesRankingLoss(theirs, scale=20.0, mini_batch_size=8)

    def run_theirs():
        loss = cached([theirs.preprocess(c) for c in columns], None)
        loss.backward()
        return loss.detach()

    loss_fn = (lambda a, p, n: LOSS(a, p, n)) if hard_negative else LOSS
    ref_loss, ref = _grads(ours, run_theirs)
    out, grads = _grads(ours, lambda: gradcache_backward(ours, columns, loss_fn, 8))
    assert max(_gaps(grads, ref).values()) < BOUND         # measured ~1e-6
    assert abs(out.loss.item() - ref_loss.item()) < 1e-5


# ------------------------------------------------------------------------------------------------ the lesson
def _norm_gap(grads, ref):
    """|grads - ref| / |ref| over all parameters as one vector."""
    diff = sum(float(((grads[n] - ref[n]) ** 2).sum()) for n in ref)
    return (diff / sum(float((g ** 2).sum()) for g in ref.values())) ** 0.5


def test_gradient_accumulation_is_a_different_gradient(model):
    """Eval mode (no dropout), so the only difference is the negatives: k - 1 per anchor instead of B - 1."""
    ref_out, ref = _grads(model, lambda: full_batch_backward(model, [QUERIES, DOCS], LOSS))
    gaps, losses = {}, {}
    for k in (4, 8):
        out, acc = _grads(model, lambda: accumulation_backward(model, [QUERIES, DOCS], LOSS, k))
        gaps[k], losses[k] = (_norm_gap(acc, ref), max(_gaps(acc, ref).values())), out.loss.item()
    # measured (norm gap, max gap): k=4 (0.14, 0.09), k=8 (0.046, 0.037); rounding is ~1e-7
    assert gaps[4][0] > 0.08 and gaps[8][0] > 0.02 and min(gaps[4][1], gaps[8][1]) > 0.01, gaps
    assert gaps[4][0] > gaps[8][0]                              # fewer negatives, further off
    assert losses[4] < losses[8] < ref_out.loss.item() - 0.5    # fewer negatives: an easier task (1.57, 2.27, 3.37)
    _, one = _grads(model, lambda: accumulation_backward(model, [QUERIES, DOCS], LOSS, B))
    assert max(_gaps(one, ref).values()) < BOUND                # one micro-batch of B rows is the big batch
    _, gc = _grads(model, lambda: gradcache_backward(model, [QUERIES, DOCS], LOSS, 4))
    assert _norm_gap(gc, ref) < BOUND                           # GradCache with the same memory is exact


# ------------------------------------------------------------------------------------------------ memory
def test_saved_activation_peak_is_a_fraction_of_the_big_batch(model):
    model.train()
    cols = [QUERIES, DOCS]
    big = saved_activation_bytes(lambda: full_batch_backward(model, cols, LOSS), exclude=model)
    peaks = {m: saved_activation_bytes(lambda: gradcache_backward(model, cols, LOSS, m), exclude=model)
             for m in (3, 6, 12)}
    acc = saved_activation_bytes(lambda: accumulation_backward(model, cols, LOSS, 6), exclude=model)
    model.zero_grad(set_to_none=True)
    model.eval()
    ratios = {m: p / big for m, p in peaks.items()}
    # measured 0.079, 0.158, 0.316: m rows of one column alive against B rows of both (m / 2B), plus the
    # small [B, d] loss graph of step 2
    assert ratios[3] < 0.1 and ratios[6] < 0.2 and ratios[12] < 0.4, ratios
    assert ratios[3] < ratios[6] < ratios[12] < 1
    assert acc / big < 0.3                       # measured 0.25: both columns of 6 rows; wrong gradient, though


def test_meter_counts_each_storage_once_and_releases_it():
    x = torch.randn(100, 10, requires_grad=True)          # 4,000 bytes
    with SavedActivationMeter() as meter:
        y = (x * x).sum() + (x * 2).sum()                 # x * x saves x twice: one storage, counted once
        assert meter.current_bytes == 4000 and meter.saved_count == 2
        y.backward()
    assert meter.current_bytes == 0 and meter.peak_bytes == 4000
    w = torch.nn.Linear(10, 10)
    with SavedActivationMeter(exclude=w) as meter:
        w(x).sum().backward()                             # saves x (counted) and the weight (excluded)
    assert meter.peak_bytes == 4000


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("mini_batch", [0, -2, 1.5, True, None])
def test_bad_mini_batch(model, mini_batch):
    with pytest.raises(ValueError, match="expected mini_batch to be an int >= 1"):
        gradcache_backward(model, [QUERIES, DOCS], LOSS, mini_batch)
    with pytest.raises(ValueError, match="expected micro_batch to be an int >= 1"):
        accumulation_backward(model, [QUERIES, DOCS], LOSS, mini_batch)


@pytest.mark.parametrize("columns, message", [
    ([QUERIES, DOCS[:-1]], r"same number of rows.*\[24, 23\]"),
    ([[], []], "at least one row"),
    ([], "non-empty list of text lists"),
    ("a string", "non-empty list of text lists"),
    ([QUERIES, "not a list"], "column 1 to be a list of strings"),
    ([QUERIES, [1, 2]], "column 1 to be a list of strings"),
])
def test_bad_columns(model, columns, message):
    for fn in (functools.partial(gradcache_backward, mini_batch=4), functools.partial(accumulation_backward,
               micro_batch=4), full_batch_backward):
        with pytest.raises(ValueError, match=message):
            fn(model, columns, LOSS)


def test_a_column_the_loss_ignores_is_an_error(model):
    with pytest.raises(ValueError, match="did not use column 2"):
        gradcache_backward(model, [QUERIES, DOCS, NEGS], lambda a, p, n: LOSS(a, p), 8)
    model.zero_grad(set_to_none=True)
    with pytest.raises(TypeError, match="expected loss_fn to return a LossOutput"):
        gradcache_backward(model, [QUERIES, DOCS], lambda a, p: 3.0, 8)
