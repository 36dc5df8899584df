"""Data parallelism with global in-batch negatives (embedlessons.distributed): 2 CPU processes (gloo), each half of
a combined batch. Gathering with gradients + averaging gives the one-process gradient; the shortcuts do not."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from embedlessons.distributed import (GATHERS, distributed_info_nce, free_port, gather_no_grad_local_slice,
                                      gather_with_grad, local_rows, parity_worker, spawn)
from embedlessons.losses import in_batch_info_nce
from embedlessons.models import small_bert

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD, B, MAX_LENGTH, T = 2, 6, 32, 0.05
MODEL = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, seed=0)
BOUND = 1e-5          # relative to the largest gradient entry; measured 5e-7
_WORDS = ("protein cell gene cancer risk trial dose mouse brain blood vitamin virus tumour receptor insulin "
          "obesity heart liver kidney bone").split()
ANCHORS = [" ".join(_WORDS[(i * 3 + j) % len(_WORDS)] for j in range(2 + i % 4)) for i in range(WORLD * B)]
POSITIVES = [" ".join(_WORDS[(i * 5 + j) % len(_WORDS)] for j in range(5 + i % 6)) for i in range(WORLD * B)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """(two-process results per gather mode, one-process loss and gradients of the combined batch)."""
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    spawn(parity_worker, WORLD, (free_port(), str(out), ANCHORS, POSITIVES, T, MAX_LENGTH, MODEL), timeout=90)
    model = small_bert(**MODEL).eval()
    loss = in_batch_info_nce(model(model.tokenize(ANCHORS, MAX_LENGTH)), model(model.tokenize(POSITIVES, MAX_LENGTH)),
                             temperature=T).loss
    loss.backward()
    single = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.load(out), loss.item(), single


def _gap(grads, ref):
    """Largest |difference| of any parameter's gradient, over the largest |entry| of any reference gradient."""
    assert set(grads) == set(ref)
    return max(float((grads[n] - ref[n]).abs().max()) for n in ref) / max(float(g.abs().max()) for g in ref.values())


def test_gather_with_grad_gives_the_single_process_gradient(results):
    two, loss, single = results
    assert abs(two["grad"]["loss"] - loss) < 1e-5
    assert _gap(two["grad"]["grads"], single) < BOUND
    assert _gap(two["ddp"]["grads"], single) < BOUND              # DistributedDataParallel averages the same way


def test_the_naive_local_slice_gather_loses_gradient(results):
    """Same loss value (same numbers gathered), but each rank's positives miss the gradient of the other rank's
    loss, where they are negatives: the pull towards the own anchor is kept, half of the push away from the other
    anchors is lost, and what was a near-balance becomes a large error (at this random initialisation)."""
    two, loss, single = results
    assert abs(two["local"]["loss"] - loss) < 1e-5
    gap = _gap(two["local"]["grads"], single)
    assert gap > 0.5, gap                                         # measured 1.95; rounding is ~5e-7


def test_no_gather_is_a_different_loss(results):
    two, loss, single = results
    assert two["none"]["loss"] < loss - 0.3                      # B - 1 negatives instead of 2B - 1: easier
    assert _gap(two["none"]["grads"], single) > 0.02, _gap(two["none"]["grads"], single)    # measured 0.079


def test_in_one_process_it_is_in_batch_info_nce():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for mode in GATHERS:
        torch.testing.assert_close(distributed_info_nce(a, p, 0.1, gather=mode).loss,
                                   in_batch_info_nce(a, p, temperature=0.1).loss)
    assert gather_with_grad(a) is a and gather_no_grad_local_slice(a) is a


def test_bad_input():
    a = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"expected gather to be one of \('grad', 'local', 'none'\), got 'all'"):
        distributed_info_nce(a, a, gather="all")
    with pytest.raises(ValueError, match="batch sizes differ"):
        distributed_info_nce(a, a[:3])
    with pytest.raises(ValueError, match="divisible by the 2 ranks"):
        local_rows(list(range(5)), 0, 2)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        local_rows(list(range(4)), 2, 2)
    assert local_rows(list(range(6)), 1, 2) == [3, 4, 5]


def test_command_line_with_torchrun():
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
        if torchrun is None:
            pytest.skip("torchrun is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "embedlessons.distributed", "--steps", "2", "--batch-size", "4", "--max-length", "32",
           "--max-rows", "64"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 2, run.stdout                            # printed by rank 0 only
    assert lines[0].startswith("step 1/2 loss ") and "mean of 2 ranks, global batch 8, gather=grad" in lines[0]
    assert 0 < float(lines[1].split()[3]) < 5
