"""Checkers for the book's exercises: each tells a right answer from the common wrong ones.

A checker runs the reader's function on inputs where the usual mistakes give different numbers,
compares with the reference implementation, and returns a :class:`CheckResult` whose message says
what is wrong (not just "wrong"). One module per part: :mod:`.part1` (Exercise 1, a bi-encoder),
:mod:`.part2` (Exercise 2, InfoNCE), :mod:`.part3` (Exercises 3 and 4, BM25 and a dense miner).
"""
from .common import CheckResult
from .part1 import EXERCISE_1_SENTENCES, check_bi_encoder
from .part2 import EXERCISE_2_SHAPES, check_info_nce
from .part3 import check_bm25, check_dense_miner

__all__ = ["CheckResult", "check_bi_encoder", "EXERCISE_1_SENTENCES", "check_info_nce", "EXERCISE_2_SHAPES",
           "check_bm25", "check_dense_miner"]
