"""pytest configuration shared by the unit tests and the notebooks (nbval).

- Progress bars go to stderr, which nbval compares with the stored outputs: turn them off.
- Stored notebook outputs come from the CPU scale profile; run nbval with it everywhere, so a GPU
  machine checks the same outputs. Cells tagged ``gpu`` run the full-size variant explicitly.
- Cells tagged ``gpu`` are skipped when CUDA is absent.
- Under pytest-xdist (``make test`` runs two workers, each notebook's cells on one worker), each worker and the
  kernels it starts use ``cores // workers`` threads: two 1-thread workers on 2 cores do about 1.5x the work of
  one 2-thread process, while two 2-thread workers would oversubscribe the cores and slow both down.
- At the end, print how long each notebook and the slowest test files took.
"""
import os
from collections import defaultdict
from pathlib import Path

import pytest

os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("EMBEDLESSONS_PROFILE", "cpu")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):      # set before torch is imported here or in a kernel
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

_notebook_seconds: dict[str, float] = defaultdict(float)
_file_seconds: dict[str, float] = defaultdict(float)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _measured_seconds() -> dict[str, float]:
    """Notebook or test file name -> its time in the last full run (tests/notebook_seconds.txt)."""
    path = Path(__file__).parent / "tests" / "notebook_seconds.txt"
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            seconds, name = line.split(maxsplit=1)
            out[name.strip()] = float(seconds)
    return out


def _slowest_files_first(items: list) -> list:
    """Test files and notebooks, the slowest (as last measured) first, each file's items in their order: xdist then
    hands out the long files before the short ones and the two workers finish together."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(str(item.fspath), []).append(item)
    seconds = _measured_seconds()
    cost = {f: seconds.get(Path(f).name, 60.0 if f.endswith(".ipynb") else 0.0) for f in files}
    order = sorted(files, key=lambda f: -cost[f])          # stable: unlisted test files keep their order
    return [item for f in order for item in files[f]]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = _slowest_files_first(items)
    cuda = None
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or "gpu" not in cell.metadata.get("tags", []):
            continue
        cuda = _cuda() if cuda is None else cuda
        if not cuda:
            item.add_marker(pytest.mark.skip(reason="cell tagged 'gpu' and CUDA is not available"))


def pytest_runtest_logreport(report):
    # runs in the controller under xdist too, so the summary sees every worker's times
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        if report.when == "call":
            _notebook_seconds[Path(path).name] += report.duration
    else:
        _file_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _file_seconds:
        terminalreporter.section("test file times (setup + call + teardown)")
        for path, seconds in sorted(_file_seconds.items(), key=lambda kv: -kv[1])[:15]:
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
        terminalreporter.write_line(f"{sum(_file_seconds.values()):7.1f} s  all test files")
    if _notebook_seconds:
        terminalreporter.section("notebook times (cell execution)")
        for name, seconds in sorted(_notebook_seconds.items()):
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
