"""What every checker returns."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CheckResult:
    """``passed`` and a message that says what is right or which mistake the answer matches."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message
