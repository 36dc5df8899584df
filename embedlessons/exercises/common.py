"""What every checker returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class CheckResult:
    """``passed`` and a message that says what is right or which mistake the answer matches."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


def call_reader(fn: Callable, *args, context: str = "", **kwargs) -> tuple[Any, CheckResult | None]:
    """Call the reader's function: ``(output, None)``, or ``(None, result)`` that reports why it failed.

    ``NotImplementedError`` means the exercise cell is still the template; any other exception is reported with
    its type and message, and ``context`` (the inputs) so that the reader can reproduce the call.
    """
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, CheckResult(False, "the function raises NotImplementedError: fill in the body")
    except Exception as exc:          # noqa: BLE001 - report any error to the reader
        where = f" ({context})" if context else ""
        return None, CheckResult(False, f"the function raised {type(exc).__name__}: {exc}{where}")


def scalar_value(out: Any) -> float | str:
    """A loss as a Python float, or a message saying why the output is not a scalar."""
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            return (f"expected a scalar loss (the mean over the batch), got a tensor of shape "
                    f"{tuple(out.shape)}")
        out = out.detach().reshape(()).item()
    if isinstance(out, bool):
        return "expected a scalar loss (float or 0-dim tensor), got bool"
    try:
        return float(out)
    except (TypeError, ValueError):
        return f"expected a scalar loss (float or 0-dim tensor), got {type(out).__name__}"
