"""Helpers of section 5.7 (embedlessons.experiments.part5_performance): CPU flags, gradient gaps, splitting a batch
(accumulation vs GradCache), data parallelism against one process, STS cosines under autocast."""
import functools

import numpy as np
import pytest
import torch

from embedlessons.data import ScoredPairs
from embedlessons.evaluation import spearman
from embedlessons.experiments import part5_performance as perf
from embedlessons.losses import in_batch_info_nce
from embedlessons.models import small_bert

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
_WORDS = ("protein cell gene cancer risk trial dose mouse brain blood vitamin virus tumour receptor insulin "
          "obesity heart liver kidney bone").split()
QUERIES = [" ".join(_WORDS[(i * 3 + j) % len(_WORDS)] for j in range(2 + i % 4)) for i in range(16)]
DOCS = [" ".join(_WORDS[(i * 5 + j) % len(_WORDS)] for j in range(5 + i % 6)) for i in range(16)]
LOSS = functools.partial(in_batch_info_nce, temperature=0.05)


@pytest.fixture(scope="module")
def tiny():
    return small_bert(**TINY, max_length=32)


def test_cpu_flags_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n")
    out = perf.cpu_flags(cpuinfo=str(info))
    assert out == {"model": "Some CPU 9000", "flags": {"avx512_bf16": True, "amx_bf16": False,
                                                       "avx512_fp16": False, "amx_fp16": False}}
    missing = perf.cpu_flags(("avx2",), cpuinfo=str(tmp_path / "absent"))
    assert missing == {"model": "unknown", "flags": {"avx2": False}}


def test_gradient_gap():
    ref = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    assert perf.gradient_gap(ref, ref) == 0
    assert perf.gradient_gap({"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([3.0])}, ref) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same parameters"):
        perf.gradient_gap({"a": ref["a"]}, ref)


def test_splitting_the_batch(tiny):
    rows = perf.splitting_the_batch(tiny, [QUERIES, DOCS], LOSS, sizes=(4, 16))
    assert list(rows) == ["big", "accumulation_4", "gradcache_4", "accumulation_16", "gradcache_16"]
    big = rows["big"]
    assert big["grad_gap"] == 0 and big["saved_ratio"] == 1 and big["negatives"] == 15
    assert rows["gradcache_4"]["grad_gap"] < 1e-5 and abs(rows["gradcache_4"]["loss"] - big["loss"]) < 1e-6
    assert rows["accumulation_4"]["grad_gap"] > 0.01 and rows["accumulation_4"]["loss"] < big["loss"] - 0.3
    assert rows["accumulation_4"]["negatives"] == 3 and rows["gradcache_4"]["negatives"] == 15
    assert rows["gradcache_4"]["saved_ratio"] < rows["accumulation_4"]["saved_ratio"] < 1
    assert rows["accumulation_16"]["grad_gap"] < 1e-5          # one micro-batch of all rows is the big batch
    assert all(p.grad is None for p in tiny.parameters())      # gradients left zeroed


def test_distributed_gaps():
    out = perf.distributed_gaps(QUERIES[:8], DOCS[:8], model_kwargs=TINY, timeout=90)
    assert set(out) == {"single", "grad", "local", "none", "ddp"}
    assert out["grad"]["grad_gap"] < 1e-5 and out["ddp"]["grad_gap"] < 1e-5
    assert abs(out["grad"]["loss"] - out["single"]["loss"]) < 1e-5
    assert out["local"]["grad_gap"] > 0.1 and out["none"]["grad_gap"] > 0.01
    assert out["none"]["loss"] < out["single"]["loss"]
    with pytest.raises(ValueError, match="divisible by 2"):
        perf.distributed_gaps(QUERIES[:3], DOCS[:3])


def test_sts_similarities(tiny):
    sts = ScoredPairs("toy", "test", QUERIES, DOCS, np.arange(16, dtype=np.float32))
    cos = perf.sts_similarities(tiny, sts, batch_size=4, max_length=32)
    a, b = tiny.encode(QUERIES, max_length=32), tiny.encode(DOCS, max_length=32)
    np.testing.assert_allclose(cos, (np.asarray(a) * np.asarray(b)).sum(1), atol=1e-5)
    bf16 = perf.sts_similarities(tiny, sts, "bfloat16", batch_size=4, max_length=32)
    assert abs(spearman(bf16, sts.scores) - spearman(cos, sts.scores)) < 0.2
    with pytest.raises(ValueError, match="unknown dtype"):
        perf.sts_similarities(tiny, sts, "int8")


def test_training_padding_shares(tiny):
    pairs = list(zip(QUERIES, DOCS))
    shares = perf.training_padding_shares(tiny.tokenizer, pairs, batch_size=4, max_length=(16, 32), mega_batch=4)
    assert shares["max_length"] > shares["dynamic"] > shares["grouped"] >= 0
    # the first batches are those training_padding_speed times: its shares for one step agree
    timed = perf.training_padding_speed(tiny, pairs, batch_size=4, steps=4, max_length=(16, 32), mega_batch=4)
    assert timed["dynamic"]["padding_share"] == pytest.approx(shares["dynamic"])
    assert timed["grouped"]["padding_share"] == pytest.approx(shares["grouped"])
