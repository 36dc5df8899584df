"""Loaders for the course datasets, returning plain Python / NumPy structures.

Every dataset lives in a folder laid out like the course data folder
(TSV files with a header row, or BEIR ``corpus.jsonl`` / ``queries.jsonl`` /
``qrels/<split>.tsv``). A dataset's folder is looked up in this order:

1. ``$EMBEDLESSONS_DATA/<folder>``, when the environment variable names a
   directory laid out like the course data folder (``stsb/``, ``scifact/`` ...);
2. the user cache, ``cache_dir()/data/<folder>``, where ``cache_dir()`` is
   ``$EMBEDLESSONS_CACHE`` or else ``~/.cache/embedlessons``;
3. the public Hugging Face hub copy (English sets only), downloaded with
   ``datasets.load_dataset``, converted to the same layout and written into
   the cache folder of step 2, then read like any local copy. Skipped when
   ``EMBEDLESSONS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``);
4. otherwise ``DatasetNotFoundError`` saying where it looked and how to fix it.

    >>> from embedlessons.data import load_sts
    >>> sts = load_sts("stsb", "test")   # ScoredPairs: sentences1, sentences2, scores
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

DATA_ENV, CACHE_ENV, OFFLINE_ENV = "EMBEDLESSONS_DATA", "EMBEDLESSONS_CACHE", "EMBEDLESSONS_OFFLINE"
KINDS = ("sts", "nli", "triplets", "retrieval", "classification")
NLI_LABELS = ("entailment", "neutral", "contradiction")

# ----------------------------------------------------------------------------- errors


class DatasetNotFoundError(FileNotFoundError):
    """No local, cached or downloadable copy of a dataset was found."""


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""


class UnknownDatasetError(ValueError, KeyError):
    """The dataset name is not in ``DATASETS``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset lives and what it offers. ``files`` patterns may use ``{split}``."""

    name: str
    folder: str
    task: str
    splits: dict[str, tuple[str, ...]]  # kind -> available splits
    default: dict[str, str | None]  # kind -> split used when split=None (None = all)
    files: dict[str, tuple[str, ...]]  # kind -> files needed (relative to folder)
    licence: str
    hub: str  # Hugging Face hub source used by step 3 ("" = none)
    source: str  # where the staged copy came from (see its SOURCE.md)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.splits)


def _info(name, folder, task, splits, files, licence, hub, source, default=None) -> DatasetInfo:
    default = default or {k: ("test" if "test" in s else s[0]) for k, s in splits.items()}
    return DatasetInfo(name, folder, task, splits, default, files, licence, hub, source)


_TSV = ("{split}.tsv",)
_BEIR = ("corpus.jsonl", "queries.jsonl", "qrels/{split}.tsv")
_TTD = ("train", "dev", "test")

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    _info("stsb", "stsb", "English STS, score 0-5", {"sts": _TTD}, {"sts": _TSV},
          "scores CC BY-SA 4.0; text per source corpus", "sentence-transformers/stsb",
          "zhangzhenhu/Semantic-Texual-Similarity-Toolkits (official STS Benchmark files)"),
    _info("sick", "sick", "English relatedness 1-5 + 3-way NLI", {"sts": _TTD, "nli": _TTD},
          {"sts": _TSV, "nli": _TSV}, "CC BY-NC-SA 3.0 (non-commercial)", "RobZamp/sick",
          "kkalouli/SICK-processing (official SICK.txt)",
          default={"sts": "test", "nli": "train"}),
    _info("scifact", "scifact", "English claim -> abstract retrieval (BEIR)",
          {"retrieval": ("test", "train")}, {"retrieval": _BEIR},
          "claims CC BY 4.0, abstracts ODC-By 1.0", "BeIR/scifact + BeIR/scifact-qrels",
          "BEIR SciFact (see scifact/SOURCE.md)"),
    _info("snli", "snli_nli", "English NLI pairs + triplets (SNLI dev+test)",
          {"nli": ("snli_dev", "snli_test"), "triplets": ("snli_dev", "snli_test")},
          {"nli": ("pairs.tsv",), "triplets": ("triplets.tsv",)},
          "CC BY-SA 4.0", "stanfordnlp/snli", "OanaMariaCamburu/e-SNLI",
          default={"nli": None, "triplets": None}),
    _info("ag_news", "ag_news", "English 4-class news topics",
          {"classification": ("train", "test")},
          {"classification": _TSV}, "research / non-commercial", "fancyzhx/ag_news",
          "madhubandru/Text-Classification-on-News-Articles-using-BERT-Framework; "
          "lst11111/bert-text-classification"),
    _info("stsb_zh", "stsb_zh", "Chinese STS (CNSD), integer score 0-5", {"sts": _TTD},
          {"sts": _TSV}, "academic research only (CNSD)", "",
          "jjljkjljk/SimCSE-Chinese; shibing624/text2vec"),
    _info("ocnli", "ocnli_zh", "Chinese NLI pairs + triplets",
          {"nli": ("train", "dev"), "triplets": ("train",)},
          {"nli": _TSV, "triplets": ("triplets_train50k.tsv",)},
          "CC BY-NC 2.0 (non-commercial)", "", "CLUEbenchmark/OCNLI; jjljkjljk/SimCSE-Chinese",
          default={"nli": "train", "triplets": "train"}),
    _info("cmrc2018", "cmrc2018_retrieval_zh", "Chinese question -> paragraph retrieval (derived)",
          {"retrieval": ("test", "dev")}, {"retrieval": _BEIR}, "CC BY-SA 4.0", "",
          "ymcui/cmrc2018"),
    _info("toutiao", "toutiao_zh", "Chinese 15-class headline topics",
          {"classification": _TTD}, {"classification": _TSV},
          "not stated (research/teaching use only)", "",
          "lst11111/bert-text-classification "
          "(orig. aceimnorstuvwxz/toutiao-text-classfication-dataset)"),
]}

AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TOUTIAO_LABELS = sorted([
    "news_agriculture", "news_car", "news_culture", "news_edu", "news_entertainment",
    "news_finance", "news_game", "news_house", "news_military", "news_sports", "news_story",
    "news_tech", "news_travel", "news_world", "stock"])


def list_datasets() -> list[str]:
    """Names accepted by the loaders."""
    return sorted(DATASETS)


def cache_dir() -> Path:
    """Root of the user cache: ``$EMBEDLESSONS_CACHE`` or ``~/.cache/embedlessons``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embedlessons"


def _get_info(name: str, kind: str | None = None, caller: str = "load") -> DatasetInfo:
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(list_datasets())}")
    info = DATASETS[name]
    if kind is not None and kind not in info.kinds:
        if kind not in KINDS:
            raise ValueError(f"Unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        raise ValueError(f"{caller}: {name!r} has no {kind} data; it offers "
                         f"{', '.join(info.kinds)} (try load({name!r}, kind={info.kinds[0]!r}))")
    return info


def _check_split(info: DatasetInfo, kind: str, split: str | None) -> str | None:
    split = info.default[kind] if split is None else split
    available = info.splits[kind]
    if split is not None and split not in available:
        hint = " (this package calls the validation split 'dev')" \
            if split in ("validation", "valid", "val") and "dev" in available else ""
        raise ValueError(f"Unknown split {split!r} for {info.name!r} ({kind}); "
                         f"available: {', '.join(available)}{hint}")
    return split


# ----------------------------------------------------------------------------- finding files


def _offline_reason() -> str | None:
    for var in (OFFLINE_ENV, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"skipped because {var}={os.environ[var]}"
    return None


def _missing(folder: Path, files: list[str]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def find_dataset(name: str, kind: str | None = None, split: str | None = None) -> Path:
    """Return the folder holding ``name``'s files, fetching the hub copy if needed."""
    info = _get_info(name, kind)
    kind = kind or info.kinds[0]
    split = _check_split(info, kind, split)
    files = [p.format(split=split) for p in info.files[kind]]
    tried = []

    env = os.environ.get(DATA_ENV, "").strip()
    if not env:
        tried.append(f"${DATA_ENV} is not set")
    else:
        folder = Path(env).expanduser() / info.folder
        if not Path(env).expanduser().is_dir():
            tried.append(f"${DATA_ENV}={env} is not a directory")
        elif missing := _missing(folder, files):
            tried.append(f"${DATA_ENV}={env}: {folder} lacks {', '.join(missing)}")
        else:
            return folder

    cached = cache_dir() / "data" / info.folder
    if not (missing := _missing(cached, files)):
        return cached
    tried.append(f"cache {cached} lacks {', '.join(missing)}")

    reason = _offline_reason()
    if reason is None and not info.hub:
        reason = f"no hub copy is configured; get the files from {info.source}"
    if reason is None:
        try:
            _fetch_from_hub(info, cached)
            if not (missing := _missing(cached, files)):
                return cached
            reason = f"download finished but {', '.join(missing)} is still missing"
        except ImportError as e:
            reason = f"needs the `datasets` package (pip install datasets): {e}"
        except Exception as e:  # any hub/network failure: report it, don't hide it
            reason = f"failed: {type(e).__name__}: {e}"
    tried.append(f"Hugging Face hub ({info.hub or 'none'}): {reason}")

    where = "\n".join(f"  {i}. {t}" for i, t in enumerate(tried, 1))
    raise DatasetNotFoundError(
        f"Dataset {name!r} ({kind}, split {split or 'all'}) not found. Looked in:\n{where}\n"
        f"To fix: set {DATA_ENV} to a folder containing {info.folder}/{files[-1]} "
        f"(laid out like the course data folder), e.g. `export {DATA_ENV}=/path/to/data`"
        + (", or run online so the hub copy is downloaded into the cache." if info.hub else "."))


# ----------------------------------------------------------------------------- file readers
# Cached on (path, mtime, size); loaders build fresh objects from the cached rows, so
# callers can mutate what they get back without touching the cache.


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _cached_tsv(path: str, _mtime: int, _size: int) -> tuple[tuple[str, ...], tuple]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames:
            raise DataFormatError(f"{path}: empty file (no header row)")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                raise DataFormatError(f"{path}, line {reader.line_num}: expected "
                                      f"{len(reader.fieldnames)} tab-separated fields")
            rows.append((reader.line_num, row))
    if not rows:
        raise DataFormatError(f"{path}: header row but no data rows")
    return tuple(reader.fieldnames), tuple(rows)


def _read_tsv(path: Path, columns: tuple[str, ...]) -> tuple[tuple[int, dict[str, str]], ...]:
    """Rows of a headered TSV as (line number, row dict), after checking the columns."""
    header, rows = _cached_tsv(*_stamp(path))
    if missing := [c for c in columns if c not in header]:
        raise DataFormatError(f"{path}, line 1: missing column(s) {missing}; "
                              f"header is {list(header)}")
    return rows


def jsonl_objects(path: str | os.PathLike, required: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file whose objects hold ``required`` keys.

    Raises :class:`DataFormatError` naming the file and line for invalid JSON, a line that is not an object, or a
    missing key; and for a file without any object.
    """
    empty = True
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}, line {i}: invalid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}, line {i}: expected a JSON object with keys {list(required)}, "
                                      f"got {type(obj).__name__}")
            if missing := [k for k in required if k not in obj]:
                raise DataFormatError(f"{path}, line {i}: missing key(s) {missing}; expected {list(required)}")
            empty = False
            yield i, obj
    if empty:
        raise DataFormatError(f"{path}: empty file")


@functools.lru_cache(maxsize=16)
def _cached_jsonl(path: str, _mtime: int, _size: int, required: tuple[str, ...]) -> tuple:
    out, seen = [], set()
    for i, obj in jsonl_objects(path, required):
        if obj["_id"] in seen:
            raise DataFormatError(f"{path}, line {i}: duplicate _id {obj['_id']!r}")
        seen.add(obj["_id"])
        out.append((str(obj["_id"]), str(obj.get("title") or ""), str(obj["text"])))
    return tuple(out)


def _read_jsonl(path: Path, required: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(_id, title, text) for each line of a BEIR jsonl file."""
    return _cached_jsonl(*_stamp(path), required)


def clear_cache() -> None:
    """Forget cached file contents (they are also re-read when a file changes)."""
    _cached_tsv.cache_clear()
    _cached_jsonl.cache_clear()


def _bad(path: Path, line: int, msg: str) -> DataFormatError:
    return DataFormatError(f"{path}, line {line}: {msg}")


# ----------------------------------------------------------------------------- dataclasses


@dataclass(repr=False)
class RetrievalDataset:
    """A BEIR-style retrieval set: corpus, the queries judged in ``split``, and qrels."""

    name: str
    split: str
    corpus: dict[str, dict[str, str]]  # doc_id -> {"title", "text"}
    queries: dict[str, str]  # query_id -> text (only queries with qrels in this split)
    qrels: dict[str, dict[str, int]]  # query_id -> {doc_id: relevance}

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self, sep: str = " ") -> list[str]:
        """Title + sep + text per doc (text alone when the title is empty), corpus order."""
        return [d["title"] + sep + d["text"] if d["title"] else d["text"]
                for d in self.corpus.values()]

    def subset(self, n_distractors: int, seed: int = 0) -> RetrievalDataset:
        """Every doc relevant to a query here + ``n_distractors`` random others (corpus order)."""
        relevant = {d for rel in self.qrels.values() for d in rel}
        others = [d for d in self.corpus if d not in relevant]
        if not 0 <= n_distractors <= len(others):
            raise ValueError(f"n_distractors must be in [0, {len(others)}], got {n_distractors}")
        picked = np.random.default_rng(seed).choice(len(others), n_distractors, replace=False)
        keep = relevant | {others[i] for i in picked}
        corpus = {d: dict(v) for d, v in self.corpus.items() if d in keep}
        qrels = {q: dict(r) for q, r in self.qrels.items()}
        return RetrievalDataset(self.name, self.split, corpus, dict(self.queries), qrels)

    def __len__(self) -> int:
        return len(self.queries)

    def __repr__(self) -> str:
        n_rel = sum(len(r) for r in self.qrels.values())
        return (f"RetrievalDataset({self.name!r}, {self.split!r}, docs={len(self.corpus)}, "
                f"queries={len(self.queries)}, qrels={n_rel})")


@dataclass(repr=False)
class ScoredPairs:
    """Sentence pairs with a gold similarity score (float32)."""

    name: str
    split: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        lo, hi = (float(self.scores.min()), float(self.scores.max())) if len(self) else (0, 0)
        return f"ScoredPairs({self.name!r}, {self.split!r}, n={len(self)}, scores {lo:g}..{hi:g})"


@dataclass(repr=False)
class NLIPairs:
    """Premise/hypothesis pairs with string labels (entailment/neutral/contradiction)."""

    name: str
    split: str
    premises: list[str]
    hypotheses: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        counts = {lab: self.labels.count(lab) for lab in NLI_LABELS}
        return f"NLIPairs({self.name!r}, {self.split!r}, n={len(self)}, {counts})"


@dataclass(repr=False)
class Triplets:
    """(anchor, positive, hard negative) text triplets."""

    name: str
    split: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str]

    def __len__(self) -> int:
        return len(self.anchors)

    def __repr__(self) -> str:
        return f"Triplets({self.name!r}, {self.split!r}, n={len(self)})"


@dataclass(repr=False)
class LabelledTexts:
    """Texts with integer labels indexing ``label_names``."""

    name: str
    split: str
    texts: list[str]
    labels: np.ndarray
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"LabelledTexts({self.name!r}, {self.split!r}, n={len(self)}, "
                f"classes={len(self.label_names)})")


# ----------------------------------------------------------------------------- loaders


def load_retrieval(name: str = "scifact", split: str = "test") -> RetrievalDataset:
    """BEIR-layout retrieval set; queries are those with qrels in ``split``.

    ``name`` is one of the book's datasets, the path of your own BEIR-layout folder
    (:func:`embedlessons.own_data.load_retrieval_folder`: the same checks, errors with file and line), or a
    Hugging Face hub dataset as ``"hf:<owner>/<name>"`` (:func:`embedlessons.own_data.load_retrieval_hub`,
    needs a network the first time).
    """
    if name not in DATASETS:
        from .own_data import HUB_PREFIX, is_folder_name, load_retrieval_folder, load_retrieval_hub

        if isinstance(name, str) and name.startswith(HUB_PREFIX):
            return load_retrieval_hub(name, split)
        if is_folder_name(name):
            return load_retrieval_folder(name, split)
    info = _get_info(name, "retrieval", "load_retrieval")
    split = _check_split(info, "retrieval", split)
    return read_beir_folder(find_dataset(name, "retrieval", split), split, name)


def read_beir_folder(folder: Path, split: str, name: str) -> RetrievalDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` of a folder, checking that every
    judgement names a known document and query and has an integer score (errors give file and line)."""
    corpus = {i: {"title": t, "text": x} for i, t, x in
              _read_jsonl(folder / "corpus.jsonl", ("_id", "text"))}
    all_queries = {i: x for i, _, x in _read_jsonl(folder / "queries.jsonl", ("_id", "text"))}
    path = folder / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    for line, r in _read_tsv(path, ("query-id", "corpus-id", "score")):
        q, d = r["query-id"], r["corpus-id"]
        if d not in corpus:
            raise _bad(path, line, f"corpus-id {d!r} is not in corpus.jsonl")
        if q not in all_queries:
            raise _bad(path, line, f"query-id {q!r} is not in queries.jsonl")
        try:
            qrels.setdefault(q, {})[d] = int(r["score"])
        except ValueError:
            raise _bad(path, line, f"score {r['score']!r} is not an integer") from None
    queries = {q: x for q, x in all_queries.items() if q in qrels}
    return RetrievalDataset(name, split, corpus, queries, qrels)


_STS = {"stsb": ("score", 0.0, 5.0), "sick": ("relatedness_score", 1.0, 5.0),
        "stsb_zh": ("score", 0.0, 5.0)}


def load_sts(name: str = "stsb", split: str = "test") -> ScoredPairs:
    """Sentence pairs with gold scores (STS-B 0-5, SICK relatedness 1-5, Chinese STS-B 0-5)."""
    info = _get_info(name, "sts", "load_sts")
    split = _check_split(info, "sts", split)
    col, lo, hi = _STS[name]
    path = find_dataset(name, "sts", split) / f"{split}.tsv"
    s1, s2, scores = [], [], []
    for line, r in _read_tsv(path, ("sentence1", "sentence2", col)):
        try:
            score = float(r[col])
        except ValueError:
            raise _bad(path, line, f"{col} {r[col]!r} is not a number") from None
        if not (math.isfinite(score) and lo <= score <= hi):
            raise _bad(path, line, f"{col} {score} is outside [{lo:g}, {hi:g}]")
        s1.append(r["sentence1"]); s2.append(r["sentence2"]); scores.append(score)
    return ScoredPairs(name, split, s1, s2, np.array(scores, dtype=np.float32))


_NLI_COLUMNS = {"snli": ("premise", "hypothesis"), "sick": ("sentence1", "sentence2"),
                "ocnli": ("premise", "hypothesis")}


def _rows_for_split(info: DatasetInfo, kind: str, split: str | None, columns: tuple[str, ...]):
    """(path, rows) for ``kind``; SNLI's files hold both splits in a ``split`` column."""
    path = find_dataset(info.name, kind, split) / info.files[kind][0].format(split=split)
    if info.name != "snli":
        return path, _read_tsv(path, columns)
    rows = _read_tsv(path, columns + ("split",))
    for line, r in rows:
        if r["split"] not in info.splits[kind]:
            raise _bad(path, line, f"split {r['split']!r} is not one of {info.splits[kind]}")
    rows = tuple(x for x in rows if split is None or x[1]["split"] == split)
    if not rows:
        raise DataFormatError(f"{path}: no rows with split {split!r}")
    return path, rows


def load_nli_pairs(name: str = "snli", split: str | None = None) -> NLIPairs:
    """NLI pairs with string labels. ``split=None``: all of SNLI, else the train split."""
    info = _get_info(name, "nli", "load_nli_pairs")
    split = _check_split(info, "nli", split)
    p, h = _NLI_COLUMNS[name]
    path, rows = _rows_for_split(info, "nli", split, (p, h, "label"))
    for line, r in rows:
        if r["label"] not in NLI_LABELS:
            raise _bad(path, line, f"label {r['label']!r} is not one of {NLI_LABELS}")
    return NLIPairs(name, split or "+".join(info.splits["nli"]), [r[p] for _, r in rows],
                    [r[h] for _, r in rows], [r["label"] for _, r in rows])


def load_triplets(name: str = "snli", split: str | None = None) -> Triplets:
    """(anchor, positive, negative) triplets. ``split=None``: all of SNLI, OCNLI's train."""
    info = _get_info(name, "triplets", "load_triplets")
    split = _check_split(info, "triplets", split)
    cols = ("anchor", "positive", "negative")
    _, rows = _rows_for_split(info, "triplets", split, cols)
    a, p, n = ([r[c] for _, r in rows] for c in cols)
    return Triplets(name, split or "+".join(info.splits["triplets"]), a, p, n)


def load_classification(name: str = "ag_news", split: str = "test") -> LabelledTexts:
    """Texts with int64 labels; ``label_names[label]`` is the class name."""
    info = _get_info(name, "classification", "load_classification")
    split = _check_split(info, "classification", split)
    path = find_dataset(name, "classification", split) / f"{split}.tsv"
    names = AG_NEWS_LABELS if name == "ag_news" else TOUTIAO_LABELS
    index = {n: i for i, n in enumerate(names)}
    texts, labels = [], []
    cols = ("text", "label", "label_name") if name == "ag_news" else ("text", "label")
    for line, r in _read_tsv(path, cols):
        class_name = r["label_name"] if name == "ag_news" else r["label"]
        if class_name not in index or (name == "ag_news" and r["label"] != str(index[class_name])):
            raise _bad(path, line, f"label {r['label']!r} / {class_name!r} does not match {names}")
        texts.append(r["text"]); labels.append(index[class_name])
    return LabelledTexts(name, split, texts, np.array(labels, dtype=np.int64), list(names))


_LOADERS: dict[str, Callable] = {"sts": load_sts, "nli": load_nli_pairs, "triplets": load_triplets,
                                 "retrieval": load_retrieval, "classification": load_classification}


def load(name: str, split: str | None = None, kind: str | None = None):
    """Load any dataset; ``kind`` defaults to the dataset's first kind, ``split`` to its default."""
    info = _get_info(name, kind)
    kind = kind or info.kinds[0]
    return _LOADERS[kind](name, _check_split(info, kind, split))


# ----------------------------------------------------------------------------- hub download (step 3)
# Each writer converts the hub copy into exactly the layout of the course data folder.


def _write_tsv(path: Path, header: list[str], rows: Iterator[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")  # standard quoting
        w.writerow(header)
        w.writerows(rows)


def _write_jsonl(path: Path, records: Iterator[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _hub_stsb(load_dataset, out: Path) -> None:
    ds = load_dataset("sentence-transformers/stsb")  # sentence1, sentence2, score in 0-1
    header = ["sentence1", "sentence2", "score", "genre", "source", "year"]
    for hub_split, split in [("train", "train"), ("validation", "dev"), ("test", "test")]:
        _write_tsv(out / f"{split}.tsv", header, (
            [r["sentence1"], r["sentence2"], f"{5 * r['score']:.3f}", "", "", ""] for r in ds[hub_split]))


def _hub_sick(load_dataset, out: Path) -> None:
    # The former canonical "sick" dataset (now RobZamp/sick): sentence_A, sentence_B,
    # relatedness_score, label (ClassLabel entailment/neutral/contradiction), id.
    # Not verified against the live hub from this offline build; on failure you get
    # DatasetNotFoundError with the reason. mteb/sickr-sts was not used: it has a single
    # test split with relatedness scores only (no train/dev split, no NLI labels).
    ds = load_dataset("RobZamp/sick")
    for hub_split, split in [("train", "train"), ("validation", "dev"), ("test", "test")]:
        d = ds[hub_split]
        names = getattr(d.features["label"], "names", NLI_LABELS)
        header = ["sentence1", "sentence2", "relatedness_score", "label", "pair_id"]
        _write_tsv(out / f"{split}.tsv", header, (
            [r["sentence_A"], r["sentence_B"], round(float(r["relatedness_score"]), 3),
             r["label"] if isinstance(r["label"], str) else names[r["label"]], r["id"]] for r in d))


def _hub_scifact(load_dataset, out: Path) -> None:
    corpus = load_dataset("BeIR/scifact", "corpus")["corpus"]  # _id, title, text
    queries = load_dataset("BeIR/scifact", "queries")["queries"]  # _id, title, text
    qrels = load_dataset("BeIR/scifact-qrels")  # splits train/test: query-id, corpus-id, score
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "corpus.jsonl", (
        {"_id": str(r["_id"]), "title": r["title"], "text": r["text"], "metadata": {}} for r in corpus))
    _write_jsonl(out / "queries.jsonl", (
        {"_id": str(r["_id"]), "text": r["text"], "metadata": {}} for r in queries))
    for split in ("train", "test"):
        _write_tsv(out / "qrels" / f"{split}.tsv", ["query-id", "corpus-id", "score"], (
            [str(r["query-id"]), str(r["corpus-id"]), int(r["score"])] for r in qrels[split]))


def _hub_snli(load_dataset, out: Path) -> None:
    # Triplets are derived from the same SNLI download with the rule used for the staged
    # file (first entailment + first contradiction per premise), rather than taken from
    # sentence-transformers/all-nli, which mixes in MultiNLI and would not match these splits.
    ds = load_dataset("stanfordnlp/snli")  # premise, hypothesis, label 0 E / 1 N / 2 C / -1 none
    pairs, triplets = [], []
    for hub_split, split in [("validation", "snli_dev"), ("test", "snli_test")]:
        by_premise: dict[str, dict[str, str]] = {}
        for r in ds[hub_split]:
            if r["label"] not in (0, 1, 2):
                continue
            label = NLI_LABELS[r["label"]]
            pairs.append([r["premise"], r["hypothesis"], label, split])
            by_premise.setdefault(r["premise"], {}).setdefault(label, r["hypothesis"])
        triplets += [[p, h["entailment"], h["contradiction"], split]
                     for p, h in by_premise.items() if "entailment" in h and "contradiction" in h]
    _write_tsv(out / "pairs.tsv", ["premise", "hypothesis", "label", "split"], iter(pairs))
    _write_tsv(out / "triplets.tsv", ["anchor", "positive", "negative", "split"], iter(triplets))


def _hub_ag_news(load_dataset, out: Path) -> None:
    # test = the full official 7600; train = a seeded 5000-row sample of the 120k split
    # (same size as the staged copy, but not the same rows).
    ds = load_dataset("fancyzhx/ag_news")  # text, label 0-3
    train = ds["train"].shuffle(seed=0)
    splits = {"train": train.select(range(min(5000, len(train)))), "test": ds["test"]}
    for split, d in splits.items():
        _write_tsv(out / f"{split}.tsv", ["text", "label", "label_name"],
                   ([r["text"], r["label"], AG_NEWS_LABELS[r["label"]]] for r in d))


# No hub copy for stsb_zh, ocnli, cmrc2018, toutiao: we know of no hub dataset that matches
# the staged files exactly (they are derived/cleaned), and we do not guess hub names.
_HUB_WRITERS = {"stsb": _hub_stsb, "sick": _hub_sick, "scifact": _hub_scifact,
                "snli": _hub_snli, "ag_news": _hub_ag_news}


def _fetch_from_hub(info: DatasetInfo, target: Path) -> None:
    """Download ``info.hub``, write our layout to a temp folder, then move files into ``target``."""
    from datasets import load_dataset  # lazy: heavy import, optional dependency

    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _HUB_WRITERS[info.name](load_dataset, tmp)
        (tmp / "SOURCE.md").write_text(
            f"# {info.name}\n\nWritten by embedlessons.data from the Hugging Face hub copy "
            f"`{info.hub}`.\nLicence: {info.licence}.\n", encoding="utf-8")
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            dest = target / f.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
