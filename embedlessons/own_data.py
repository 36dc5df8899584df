"""Your own data: the book's loaders for files you bring, with the same checks as the staged sets.

A retrieval collection in the BEIR layout (Thakur et al. 2021)::

    my_collection/
        corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   one document per line
        queries.jsonl       {"_id": "q1", "text": "..."}                   one query per line
        qrels/test.tsv      query-id <TAB> corpus-id <TAB> score           header row, then one judgement per line

loads with ``load_retrieval("path/to/my_collection", split="test")`` (an argument that is not one of the
book's dataset names and names a folder, or contains a path separator, is read as a folder). Training and evaluation files with named
columns load with :func:`load_scored_pairs_file` (sentence1, sentence2, score), :func:`load_pairs_file`
(anchor, positive) and :func:`load_triplets_file` (anchor, positive, negative), from TSV (a header row,
tab-separated) or JSONL (one object per line). Every error names the file, the line and what was expected.

    >>> from embedlessons.data import load_retrieval
    >>> ds = load_retrieval("data/my_collection", split="test")     # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .data import (DataFormatError, DatasetNotFoundError, RetrievalDataset, ScoredPairs, Triplets, _bad, _read_tsv,
                   jsonl_objects, read_beir_folder)

__all__ = ["is_folder_name", "load_retrieval_folder", "load_retrieval_hub", "HUB_PREFIX", "save_beir_folder", "load_scored_pairs_file", "load_pairs_file",
           "load_triplets_file", "Pairs", "BEIR_LAYOUT"]

BEIR_LAYOUT = ("corpus.jsonl", "queries.jsonl", "qrels/<split>.tsv")


def is_folder_name(name: str | os.PathLike) -> bool:
    """True when ``name`` should be read as a path, not a dataset name: a Path, an existing folder, or a string
    with a path separator or a leading ``.`` / ``~``."""
    if isinstance(name, os.PathLike):
        return True
    return isinstance(name, str) and (os.sep in name or "/" in name or name.startswith((".", "~"))
                                      or Path(name).is_dir())


def load_retrieval_folder(folder: str | os.PathLike, split: str = "test", name: str | None = None) -> RetrievalDataset:
    """A BEIR-layout folder as a :class:`~embedlessons.data.RetrievalDataset` (the queries judged in ``split``).

    Raises :class:`~embedlessons.data.DatasetNotFoundError` naming the missing files and the expected layout,
    and :class:`~embedlessons.data.DataFormatError` with the file and line for malformed JSON, a missing
    ``_id`` / ``text``, duplicate ids, a qrels row whose ids are not in the corpus or the queries, a
    non-integer score, an empty corpus, or a split without any judgement.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root} is not a folder; a retrieval collection is a folder with "
                                   f"{', '.join(BEIR_LAYOUT)}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'test', got {split!r}")
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl", "qrels": root / "qrels" / f"{split}.tsv"}
    missing = [str(p.relative_to(root)) for p in files.values() if not p.is_file()]
    if missing:
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        hint = f" (qrels/ has the splits {splits})" if splits and "qrels" in missing[-1] else ""
        raise DatasetNotFoundError(f"{root} lacks {', '.join(missing)}{hint}; a retrieval collection is a folder "
                                   f"with {', '.join(BEIR_LAYOUT)}")
    ds = read_beir_folder(root, split, name or root.name)
    if not any(v > 0 for rel in ds.qrels.values() for v in rel.values()):
        raise DataFormatError(f"{files['qrels']}: no judgement with a score > 0, so nothing is relevant in split "
                              f"{split!r}")
    return ds


def save_beir_folder(folder: str | os.PathLike, splits: Mapping[str, RetrievalDataset],
                     corpus: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """Write datasets as one BEIR-layout folder: the corpus once, every split's queries, ``qrels/<split>.tsv``.

    Args:
        folder: created if missing; existing files of the layout are overwritten.
        splits: split name -> dataset whose queries and judgements go in that split (e.g. ``{"train": ...,
            "test": ...}``, each one a :class:`~embedlessons.data.RetrievalDataset` or a ``.subset`` of one).
        corpus: ``{doc id: {"title", "text"}}`` to write (default: the union of the datasets' corpora); every
            judged document must be in it.

    Returns the folder, ready for :func:`load_retrieval_folder` (and for BEIR, MTEB or any BEIR-reading tool).
    """
    if not splits:
        raise ValueError("splits is empty: give at least one {split name: dataset}")
    root = Path(folder).expanduser()
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = dict(corpus) if corpus is not None else {d: doc for ds in splits.values() for d, doc in ds.corpus.items()}
    queries: dict[str, str] = {}
    for split, ds in splits.items():
        unknown = sorted({d for rel in ds.qrels.values() for d in rel} - set(docs))
        if unknown:
            raise ValueError(f"split {split!r} judges documents that are not in the corpus: {unknown[:5]}")
        queries.update(ds.queries)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d, "title": doc.get("title", ""), "text": doc["text"]}, ensure_ascii=False)
                     + "\n" for d, doc in docs.items())
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())
    for split, ds in splits.items():
        rows = [f"{q}\t{d}\t{g}" for q, rel in ds.qrels.items() for d, g in rel.items()]
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n",
                                                   encoding="utf-8")
    return root


#: Prefix of a Hugging Face hub dataset name: ``load_retrieval("hf:BeIR/nfcorpus")``.
HUB_PREFIX = "hf:"


def _single_split(dataset_dict, preferred: str):
    """The split named ``preferred`` of a ``DatasetDict`` (BEIR names it after the config), else its only one."""
    if preferred in dataset_dict:
        return dataset_dict[preferred]
    if len(dataset_dict) == 1:
        return next(iter(dataset_dict.values()))
    raise DataFormatError(f"expected a split {preferred!r} or a single split, got {sorted(dataset_dict)}")


def load_retrieval_hub(name: str, split: str = "test", load_dataset=None) -> RetrievalDataset:
    """A BEIR-style collection from the Hugging Face hub, e.g. ``"hf:BeIR/nfcorpus"`` or ``"hf:mteb/nfcorpus"``.

    The repository needs the configs ``corpus`` (``_id``, ``title``, ``text``) and ``queries`` (``_id``,
    ``text``), and judgements (``query-id``, ``corpus-id``, ``score``) per split either in a companion repository
    ``<name>-qrels`` (the BeIR layout) or in the repository's ``default`` config (the MTEB layout). The first call
    downloads them with ``datasets`` and writes a BEIR folder under the cache (``$EMBEDLESSONS_CACHE/hub/``);
    every call then reads that folder with :func:`load_retrieval_folder`, so the same checks apply.
    ``load_dataset`` replaces ``datasets.load_dataset`` (tests).
    """
    from .data import _offline_reason, cache_dir

    repo = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    if not repo or repo.count("/") != 1:
        raise ValueError(f"a hub dataset name is {HUB_PREFIX}<owner>/<name> (e.g. hf:BeIR/nfcorpus), got {name!r}")
    folder = cache_dir() / "hub" / repo.replace("/", "__")
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        reason = _offline_reason()
        if reason is not None:
            raise DatasetNotFoundError(f"{name}: not in the cache ({folder}) and the download was {reason}; run "
                                       f"once with a network, or download the BEIR folder and pass its path")
        if load_dataset is None:
            from datasets import load_dataset
        corpus = _single_split(load_dataset(repo, "corpus"), "corpus")
        queries = _single_split(load_dataset(repo, "queries"), "queries")
        try:
            qrels = load_dataset(repo + "-qrels")
        except Exception:                    # noqa: BLE001 - no companion repository: the MTEB layout
            qrels = load_dataset(repo, "default")
        if split not in qrels:
            raise DatasetNotFoundError(f"{name}: no judgements for split {split!r}; the hub copy has {sorted(qrels)}")
        docs = {str(r["_id"]): {"title": r.get("title") or "", "text": r["text"]} for r in corpus}
        texts = {str(r["_id"]): r["text"] for r in queries}
        splits = {}
        for split_name, rows in qrels.items():        # every split at once: one corpus and query file for all
            judged: dict[str, dict[str, int]] = {}
            for r in rows:
                if str(r["query-id"]) in texts:
                    judged.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
            splits[split_name] = RetrievalDataset(repo, split_name, docs, {q: texts[q] for q in judged}, judged)
        save_beir_folder(folder, splits, corpus=docs)
    return load_retrieval_folder(folder, split, name=repo)


# ------------------------------------------------------------------------------------------ column files
def _rows(path: str | os.PathLike, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of a TSV (header row) or JSONL file with at least ``columns``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: expected a .tsv (header row: {', '.join(columns)}) or a "
                                   f".jsonl file (one object per line with keys {', '.join(columns)})")
    if path.suffix.lower() in (".jsonl", ".json"):
        return [(i, {c: obj[c] for c in columns}) for i, obj in jsonl_objects(path, columns)]
    if path.suffix.lower() not in (".tsv", ".txt"):
        raise DataFormatError(f"{path}: unknown file type {path.suffix!r}; use .tsv (tab-separated, header row) or "
                              f".jsonl")
    return list(_read_tsv(path, tuple(columns)))


def _texts(path, rows, columns) -> list[list[str]]:
    out = [[] for _ in columns]
    for line, r in rows:
        for k, c in enumerate(columns):
            value = r[c]
            if not isinstance(value, str) or not value.strip():
                raise _bad(Path(path), line, f"{c} must be a non-empty string, got {value!r}")
            out[k].append(value)
    return out


def load_scored_pairs_file(path: str | os.PathLike, columns: Sequence[str] = ("sentence1", "sentence2", "score"),
                           low: float | None = None, high: float | None = None, name: str | None = None) -> ScoredPairs:
    """Scored sentence pairs (an STS-style file) as :class:`~embedlessons.data.ScoredPairs`.

    ``columns`` names the two text columns and the score column. ``low`` / ``high``: the score range; a score
    outside it is an error with its line (``scored_pairs_from_sts`` then scales by this range: pass it there too).
    """
    rows = _rows(path, columns)
    a, b = _texts(path, rows, columns[:2])
    scores = []
    for line, r in rows:
        try:
            s = float(r[columns[2]])
        except (TypeError, ValueError):
            raise _bad(Path(path), line, f"{columns[2]} {r[columns[2]]!r} is not a number") from None
        if not math.isfinite(s) or (low is not None and s < low) or (high is not None and s > high):
            raise _bad(Path(path), line, f"{columns[2]} {s} is outside [{low}, {high}]")
        scores.append(s)
    return ScoredPairs(name or Path(path).stem, "file", a, b, np.array(scores, dtype=np.float32))


class Pairs(Triplets):
    """(anchor, positive) text pairs read from a file (``negatives`` is empty)."""

    def __repr__(self) -> str:
        return f"Pairs({self.name!r}, n={len(self)})"


def load_pairs_file(path: str | os.PathLike, columns: Sequence[str] = ("anchor", "positive"),
                    name: str | None = None) -> Pairs:
    """(anchor, positive) training pairs; ``PairDataset(p.anchors, p.positives)`` trains on them."""
    rows = _rows(path, columns)
    a, p = _texts(path, rows, columns)
    return Pairs(name or Path(path).stem, "file", a, p, [])


def load_triplets_file(path: str | os.PathLike, columns: Sequence[str] = ("anchor", "positive", "negative"),
                       name: str | None = None) -> Triplets:
    """(anchor, positive, negative) training triplets as :class:`~embedlessons.data.Triplets`."""
    rows = _rows(path, columns)
    a, p, n = _texts(path, rows, columns)
    return Triplets(name or Path(path).stem, "file", a, p, n)
