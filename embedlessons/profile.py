"""Scale profiles: CPU settings that keep CI fast, full-size settings where CUDA exists.

Every experiment in the book reads its sizes from a :class:`ScaleProfile` instead of hard-coding
them, so the same notebook runs in a few minutes on a 2-core laptop (``cpu``) and at the size the
papers use on a GPU (``gpu``). The profile is chosen by ``EMBEDLESSONS_PROFILE`` (``cpu``, ``gpu``
or ``auto``); ``auto`` (the default) picks ``gpu`` when ``torch.cuda.is_available()``.

The CPU reductions are documented here, in one place, and every notebook prints the profile it
ran with, so a number in the book always says which setting produced it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

__all__ = ["ScaleProfile", "CPU", "GPU", "get_profile", "cuda_available", "full_size_here"]


@dataclass(frozen=True)
class ScaleProfile:
    """Sizes for one scale of experiment.

    Attributes:
        name: ``"cpu"`` or ``"gpu"``.
        device: torch device string.
        doc_max_length: token limit when encoding retrieval documents (MiniLM was trained at 256).
        query_max_length: token limit for queries and STS sentences.
        scifact_distractors: SciFact corpus size reduction: every relevant test document plus this many
            random other documents (seed 0). ``None`` means the full 5,183-document corpus.
        encode_batch_size: texts per forward pass when encoding.
    """

    name: str
    device: str
    doc_max_length: int
    query_max_length: int
    scifact_distractors: int | None
    encode_batch_size: int

    def describe(self) -> str:
        corpus = "full corpus" if self.scifact_distractors is None else (
            f"relevant docs + {self.scifact_distractors} random distractors")
        return (f"profile={self.name} (device={self.device}): SciFact {corpus}, "
                f"documents truncated at {self.doc_max_length} tokens")

    def as_dict(self) -> dict:
        return asdict(self)


# CPU: SciFact's test-relevant abstracts plus 1,000 random distractors, at 128 tokens, encode in about a
# minute on 2 cores; the full corpus at 256 tokens takes about 7 minutes there.
CPU = ScaleProfile("cpu", "cpu", doc_max_length=128, query_max_length=64, scifact_distractors=1000,
                   encode_batch_size=32)
# GPU: the settings MTEB/BEIR use for MiniLM: full corpus, 256 tokens.
GPU = ScaleProfile("gpu", "cuda", doc_max_length=256, query_max_length=64, scifact_distractors=None,
                   encode_batch_size=256)

_PROFILES = {"cpu": CPU, "gpu": GPU}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> ScaleProfile:
    """Return the profile named ``name``, else ``$EMBEDLESSONS_PROFILE``, else ``auto``.

    ``auto`` means ``gpu`` where CUDA exists and ``cpu`` otherwise. Asking for ``gpu`` without CUDA
    raises, rather than silently running a 30-minute job on the CPU.
    """
    name = (name or os.environ.get("EMBEDLESSONS_PROFILE") or "auto").lower()
    if name == "auto":
        name = "gpu" if cuda_available() else "cpu"
    if name not in _PROFILES:
        raise ValueError(f"unknown scale profile {name!r}; choose one of {sorted(_PROFILES)} or 'auto'")
    if name == "gpu" and not cuda_available():
        raise RuntimeError("the 'gpu' profile needs CUDA, which torch does not see here; "
                           "use EMBEDLESSONS_PROFILE=cpu (or auto)")
    return _PROFILES[name]


def full_size_here(what: str) -> bool:
    """Guard of a notebook's full-size (``gpu``-tagged) cell, so that "Run all" never stops at one.

    Returns True where CUDA exists. Elsewhere it prints that the cell would ``what`` (e.g. "fine-tune
    MiniLM for 150 steps on the full corpus") and returns False, so the cell's body, written under
    ``if full_size_here(...):``, is skipped and the notebook runs on.
    """
    if not what or not what.strip():
        raise ValueError("say what the full-size cell would do, e.g. 'train 1,000 steps of batch 64'")
    if cuda_available():
        return True
    print(f"No CUDA GPU here, so this full-size cell does not run. On a GPU it would {what.strip()}.")
    return False
