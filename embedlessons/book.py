"""Small helpers that notebooks use to talk to the book build (myst-nb) and to Colab."""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["glue", "in_colab", "show_table"]


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:}`name``` roles in the book's prose.

    Uses ``myst_nb.glue`` when myst-nb is installed (the book build), and does nothing otherwise (a
    reader running the notebook in Colab without the book toolchain).
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - outside the book toolchain
        return
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # NumPy/torch scalar -> Python
        value = value.item()  # (myst-nb formats Python numbers; "np.float64(0.5)" would not parse)
    _glue(name, value, display=display)


def show_table(rows: list[dict], floatfmt: str = ".3f") -> str:
    """Format a list of dicts as a plain-text table (stable, so nbval can compare it)."""
    if not rows:
        return "(empty table)"
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("x%"))
        return True
    except ValueError:
        return False
