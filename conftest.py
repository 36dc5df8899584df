"""pytest configuration shared by the unit tests and the notebooks (nbval).

- Progress bars go to stderr, which nbval compares with the stored outputs: turn them off.
- Stored notebook outputs come from the CPU scale profile; run nbval with it everywhere, so a GPU
  machine checks the same outputs. Cells tagged ``gpu`` run the full-size variant explicitly.
- Cells tagged ``gpu`` are skipped when CUDA is absent.
- At the end, print how long each notebook and the slowest test files took.
"""
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("EMBEDLESSONS_PROFILE", "cpu")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_notebook_seconds: dict[str, float] = defaultdict(float)
_file_seconds: dict[str, float] = defaultdict(float)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    cuda = None
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or "gpu" not in cell.metadata.get("tags", []):
            continue
        cuda = _cuda() if cuda is None else cuda
        if not cuda:
            item.add_marker(pytest.mark.skip(reason="cell tagged 'gpu' and CUDA is not available"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.perf_counter()
    yield
    if getattr(item, "cell", None) is not None:
        _notebook_seconds[Path(str(item.fspath)).name] += time.perf_counter() - start


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if not path.endswith(".ipynb"):
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
