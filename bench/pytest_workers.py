"""Why `make test` runs two 1-thread pytest workers instead of one 2-thread process: the work per minute of each.

    python bench/pytest_workers.py           # about a minute on 2 cores

One unit of work is what a notebook does: import the package, encode 1,000 STS-B sentences with MiniLM (no
cache) and train a small BERT for 40 steps. The script times one unit in one process with every core as torch
threads, then one unit in each of ``cores`` processes at once with one thread each, and prints the throughput
ratio (> 1: the parallel workers do more work per minute). It also checks that encoding gives bitwise the same
vectors with one thread as with all of them (the stored notebook outputs depend on it). Not run in CI.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNIT = r"""
import functools, sys, numpy as np
from embedlessons.data import load_sts, load_triplets
from embedlessons.losses import in_batch_info_nce
from embedlessons.models import load_model, small_bert
from embedlessons.training import TrainConfig, TripletDataset, train
sts = load_sts("stsb", "test")
vectors = load_model("all-MiniLM-L6-v2").encode(sts.sentences1[:1000], max_length=64, cache=False, progress=False)
t = load_triplets("snli")
data = TripletDataset(t.anchors[:2000], t.positives[:2000], t.negatives[:2000])
train(small_bert(seed=0), data, functools.partial(in_batch_info_nce, temperature=0.05),
      TrainConfig(steps=40, batch_size=32, lr=1e-3, max_length=32, seed=0), cache=False, progress=False)
np.save(sys.argv[1], vectors)
"""


def run(n_processes: int, threads: int, out_dir: Path) -> tuple[float, list[Path]]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    outs = [out_dir / f"{n_processes}x{threads}_{i}.npy" for i in range(n_processes)]
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", UNIT, str(o)], env=env) for o in outs]
    if any(p.wait() for p in procs):
        raise SystemExit("a worker failed")
    return time.perf_counter() - start, outs


def main() -> None:
    import numpy as np

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        one, (ref,) = run(1, cores, Path(tmp))
        many, outs = run(cores, 1, Path(tmp))
        same = all(np.array_equal(np.load(ref), np.load(o)) for o in outs)
    print(f"{cores} cores: one process x {cores} threads: 1 unit in {one:.1f} s; "
          f"{cores} processes x 1 thread: {cores} units in {many:.1f} s")
    print(f"throughput ratio (parallel workers / one process): {cores * one / many:.2f}")
    print(f"encodings bitwise equal across thread counts: {same}")


if __name__ == "__main__":
    main()
