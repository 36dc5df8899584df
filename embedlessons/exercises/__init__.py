"""Checkers for the book's exercises: each tells a right answer from the common wrong ones.

A checker runs the reader's function on inputs where the usual mistakes give different numbers,
compares with the reference implementation, and returns a :class:`CheckResult` whose message says
what is wrong (not just "wrong"). One module per part: :mod:`.part1` (Exercise 1, a bi-encoder), ...
"""
from .common import CheckResult
from .part1 import EXERCISE_1_SENTENCES, check_bi_encoder

__all__ = ["CheckResult", "check_bi_encoder", "EXERCISE_1_SENTENCES"]
