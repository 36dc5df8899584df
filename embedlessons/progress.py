"""Progress bars for long work: tqdm (widgets in Jupyter, text in a terminal).

``TQDM_DISABLE=1`` turns every bar off (the test suite does so: nbval compares cell outputs, and a
bar is not a result).
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, total: int | None = None, desc: str | None = None, enabled: bool = True,
                 unit: str = "it") -> tqdm:
    """A tqdm bar, off when ``enabled`` is False or ``$TQDM_DISABLE`` is set."""
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in {"1", "true", "yes"}
    return tqdm(iterable, total=total, desc=desc, disable=off, unit=unit)
