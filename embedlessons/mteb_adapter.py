"""Evaluating a bi-encoder with the real ``mteb`` package (2.x), offline and on local data.

MTEB (Muennighoff et al. 2023, "MTEB: Massive Text Embedding Benchmark") scores a model through an
encoder protocol: ``encode`` receives a torch ``DataLoader`` of dict batches (``{"text": [...], ...}``)
plus keyword arguments (``task_metadata``, ``hf_split``, ``hf_subset``, ``prompt_type``), and the model
describes itself with a ``mteb_model_meta`` (:class:`mteb.models.ModelMeta`). This module wraps our
:class:`~embedlessons.models.BiEncoder` that way, builds MTEB tasks whose data come from this package's
loaders instead of the Hugging Face hub, and runs ``mteb.evaluate`` without its result cache.

    >>> from embedlessons.models import load_model
    >>> from embedlessons.mteb_adapter import MTEBEncoder, local_retrieval_task, local_sts_task, run_mteb
    >>> encoder = MTEBEncoder(load_model("all-MiniLM-L6-v2"), max_length=256)     # doctest: +SKIP
    >>> run_mteb(encoder, [local_sts_task("stsb"), local_retrieval_task("scifact", n_distractors=1000)])  # doctest: +SKIP
    {'stsb': {'cosine_spearman': ..., ...}, 'scifact': {'ndcg_at_10': ..., 'recall_at_100': ..., ...}}

The numbers equal our own evaluators' (tests/test_mteb_adapter.py checks it) when both sides see the same
texts, token limits and batch size, with two differences to keep in mind:

* Retrieval documents: MTEB embeds ``(title + " " + text).strip()`` (``text.strip()`` when the title is
  empty); :meth:`RetrievalDataset.doc_texts` does not strip. :func:`mteb_document_texts` gives MTEB's text.
  (In SciFact 3 of 5,183 documents differ, by surrounding whitespace only.)
* MTEB rounds NDCG, MAP, recall and precision to 5 decimals (``round(x, 5)``); MRR and the STS
  correlations are not rounded.

``mteb`` is an optional dependency (``pip install "mteb>=2.1,<3"``, in the ``book`` extra); it is imported
only when a function below needs it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np
import torch

from .data import _STS, RetrievalDataset, ScoredPairs, load_retrieval, load_sts
from .models import MINILM, BiEncoder, minilm_path
from .training import global_rng_kept

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask
    from mteb.models import ModelMeta

__all__ = ["MTEBEncoder", "local_sts_task", "local_retrieval_task", "run_mteb", "mteb_document_texts",
           "STS_SCORES", "RETRIEVAL_SCORES"]

# the scores run_mteb returns per task (MTEB's names; the first is each task's main score)
STS_SCORES = ("cosine_spearman", "cosine_pearson", "spearman", "pearson")
RETRIEVAL_SCORES = ("ndcg_at_10", "map_at_10", "mrr_at_10", "recall_at_10", "recall_at_100")

_CHINESE = {"stsb_zh", "cmrc2018"}


def _require_mteb():
    try:
        import mteb
    except ImportError as err:
        raise ImportError('this needs the `mteb` package (2.x): pip install "mteb>=2.1,<3" '
                          '(it is in the "book" extra of embedlessons)') from err
    return mteb


def _positive_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


Embeddings = Union[np.ndarray, torch.Tensor]


def _as_2d_float32(x: Embeddings) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                           digest_size=12).hexdigest()


def mteb_document_texts(ds: RetrievalDataset) -> list[str]:
    """The text MTEB 2.x embeds for each document, in ``ds.doc_ids`` order: ``(title + " " + text).strip()``,
    or ``text.strip()`` when the title is empty (``mteb._create_dataloaders._corpus_to_dict``)."""
    return [(d["title"] + " " + d["text"]).strip() if d.get("title") else d["text"].strip()
            for d in ds.corpus.values()]


class MTEBEncoder:
    """A :class:`~embedlessons.models.BiEncoder` dressed as an MTEB 2.x encoder.

    Args:
        model: the bi-encoder to evaluate (anything else raises ``TypeError``).
        max_length: token limit of every text (default: the model's ``max_length``).
        batch_size: texts per forward pass (the same meaning as in our evaluators; MTEB's own
            ``batch_size`` only sizes its dataloader, whose batches are gathered before encoding).
        query_max_length: token limit of retrieval queries (default: ``max_length``), like
            ``RetrievalEvaluator``'s separate query and document limits.
        name: model name after ``"embedlessons/"`` (default: the folder the weights came from, e.g.
            ``all-MiniLM-L6-v2``, or a description of a from-scratch BERT).
        cache: use the on-disk embedding cache of :func:`embedlessons.encoding.encode`.

    :meth:`encode` takes MTEB's ``DataLoader`` of ``{"text": list[str], ...}`` batches (or a plain list of
    N strings) and returns float32 embeddings [N, d]. :meth:`similarity` scores [n1, d] x [n2, d] -> [n1, n2]
    and :meth:`similarity_pairwise` [n, d] x [n, d] -> [n], both as the dot product computed in NumPy
    float32, exactly as :func:`embedlessons.retrieval.dense_run` scores (for a model that L2-normalises,
    that is the cosine; ``mteb_model_meta`` says ``cosine`` then, ``dot`` otherwise). ``texts_encoded``
    counts the texts MTEB asked for, so a test can see that MTEB ran this model and not another one.
    """

    def __init__(self, model: BiEncoder, max_length: int | None = None, batch_size: int = 64, *,
                 query_max_length: int | None = None, name: str | None = None, cache: bool = True):
        if not isinstance(model, BiEncoder):
            raise TypeError(f"MTEBEncoder wraps an embedlessons.models.BiEncoder, got {type(model).__name__}; "
                            "load one with embedlessons.models.load_model(...) or small_bert(...)")
        self.model = model
        self.max_length = model.max_length if max_length is None else _positive_int(max_length, "max_length")
        self.query_max_length = (self.max_length if query_max_length is None
                                 else _positive_int(query_max_length, "query_max_length"))
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.cache = bool(cache)
        self.name = "embedlessons/" + (name or self._default_name())
        self.texts_encoded = 0

    def _default_name(self) -> str:
        config = self.model.transformer.config
        source = str(getattr(config, "_name_or_path", "") or "")
        if source:
            with contextlib.suppress(ImportError, OSError):
                if Path(source).resolve() == minilm_path().resolve():   # the bundled copy lives in .../model
                    return MINILM
            return Path(source).name or source
        return (f"{type(self.model.transformer).__name__}-{config.num_hidden_layers}x{config.hidden_size}"
                f"-{self.model.pooling}")

    @property
    def mteb_model_meta(self) -> ModelMeta:
        """What MTEB records about the model. Without it (or if it is not a ``ModelMeta``) ``mteb.evaluate``
        silently substitutes an empty ``ModelMeta`` and tries to *load* a model from it instead of using this
        one. ``loader=None``: a local model MTEB cannot load by name; ``revision``: the weights' fingerprint,
        so two differently trained models never share a name and revision."""
        from mteb.models import ModelMeta

        return ModelMeta(
            loader=None, name=self.name, revision=self.model.fingerprint(), release_date=None,
            languages=None, n_parameters=sum(p.numel() for p in self.model.parameters()),
            memory_usage_mb=None, max_tokens=self.max_length, embed_dim=self.model.dim, license=None,
            open_weights=None, public_training_code=None, public_training_data=None, framework=["PyTorch"],
            reference=None, similarity_fn_name="cosine" if self.model.normalize else "dot",
            use_instructions=False, training_datasets=None, modalities=["text"])

    def encode(self, inputs: Iterable[dict[str, Any]] | Sequence[str], *, task_metadata: Any = None,
               hf_split: str | None = None, hf_subset: str | None = None, prompt_type: str | None = None,
               **kwargs: Any) -> np.ndarray:
        """Embed MTEB's inputs [N] -> float32 [N, d], in input order (no prompts or instructions are added).

        ``prompt_type == "query"`` selects ``query_max_length``; everything else uses ``max_length``. The
        other keyword arguments (task metadata, split, subset, MTEB's ``batch_size``...) are accepted and
        ignored.
        """
        if isinstance(inputs, (list, tuple)):
            texts = list(inputs)
        else:
            texts = []
            for batch in inputs:
                if not isinstance(batch, dict) or "text" not in batch:
                    keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
                    raise ValueError(f"MTEBEncoder embeds text only; got a batch without 'text' ({keys})")
                texts.extend(batch["text"])
        max_length = self.query_max_length if prompt_type == "query" else self.max_length
        vectors = self.model.encode(texts, max_length=max_length, batch_size=self.batch_size, progress=False,
                                    cache=self.cache)
        self.texts_encoded += len(texts)
        return vectors

    def similarity(self, embeddings1: Embeddings, embeddings2: Embeddings) -> torch.Tensor:
        """Scores [n1, n2] = embeddings1 [n1, d] @ embeddings2 [n2, d].T (NumPy float32)."""
        a, b = _as_2d_float32(embeddings1), _as_2d_float32(embeddings2)
        return torch.from_numpy(np.ascontiguousarray(a @ b.T))

    def similarity_pairwise(self, embeddings1: Embeddings, embeddings2: Embeddings) -> torch.Tensor:
        """Scores [n] of row i against row i of two [n, d] arrays (NumPy float32 dot products)."""
        a, b = _as_2d_float32(embeddings1), _as_2d_float32(embeddings2)
        if a.shape != b.shape:
            raise ValueError(f"pairwise similarity needs equal shapes, got {a.shape} and {b.shape}")
        return torch.from_numpy((a * b).sum(axis=1))

    def __repr__(self) -> str:
        return (f"MTEBEncoder({self.name!r}, max_length={self.max_length}, "
                f"query_max_length={self.query_max_length}, batch_size={self.batch_size})")


@functools.lru_cache(maxsize=None)
def _task_classes() -> tuple[type, type]:
    """The two task base classes (built on first use, so that importing this module does not import mteb)."""
    _require_mteb()
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    class LocalSTSTask(AbsTaskSTS):
        """MTEB STS task over ``embedlessons_data`` (a ScoredPairs), columns sentence1 / sentence2 / score."""

        embedlessons_data: ScoredPairs

        def load_data(self, *args: Any, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            pairs = self.embedlessons_data
            self.dataset = DatasetDict({self.metadata.eval_splits[0]: Dataset.from_dict({
                "sentence1": list(pairs.sentences1), "sentence2": list(pairs.sentences2),
                "score": [float(s) for s in pairs.scores]})})
            self.data_loaded = True

    class LocalRetrievalTask(AbsTaskRetrieval):
        """MTEB retrieval task over ``embedlessons_data`` (a RetrievalDataset), in MTEB 2.x's split layout."""

        embedlessons_data: RetrievalDataset

        def load_data(self, *args: Any, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            ds = self.embedlessons_data
            corpus = Dataset.from_dict({"id": ds.doc_ids,
                                        "title": [d.get("title", "") for d in ds.corpus.values()],
                                        "text": [d["text"] for d in ds.corpus.values()]})
            queries = Dataset.from_dict({"id": list(ds.queries), "text": list(ds.queries.values())})
            relevant = {q: {d: int(g) for d, g in rels.items()} for q, rels in ds.qrels.items()}
            self.dataset = {"default": {self.metadata.eval_splits[0]: {
                "corpus": corpus, "queries": queries, "relevant_docs": relevant, "top_ranked": None}}}
            self.data_loaded = True

    return LocalSTSTask, LocalRetrievalTask


def _make_task(base: type, name: str, split: str, data: ScoredPairs | RetrievalDataset, task_type: str, main_score: str, description: str,
               digest: str, **class_attrs: Any) -> AbsTask:
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=name, description=description, type=task_type, category="t2t", modalities=["text"],
        dataset={"path": f"embedlessons/{name}", "revision": digest}, eval_splits=[split],
        eval_langs=["cmn-Hans" if name in _CHINESE else "eng-Latn"], main_score=main_score,
        bibtex_citation="")
    # metadata lives on a class of its own: AbsTask.unload_data() (run after every evaluation) deletes a
    # per-instance ``metadata``, which would fall back to the base class's
    cls = type(f"{base.__name__}_{name}_{split}", (base,),
               {"metadata": metadata, "embedlessons_data": data, **class_attrs})
    with global_rng_kept():
        return cls()


def local_sts_task(name: str = "stsb", split: str = "test", max_pairs: int | None = None) -> AbsTask:
    """An MTEB STS task (main score ``cosine_spearman``) on ``embedlessons.data.load_sts(name, split)``.

    Args:
        name: ``"stsb"`` (0-5), ``"sick"`` (1-5) or ``"stsb_zh"`` (0-5); unknown names raise
            ``embedlessons.data.UnknownDatasetError``.
        split: e.g. ``"test"`` or ``"dev"``.
        max_pairs: keep only the first ``max_pairs`` pairs (at least 2).

    Returns an ``mteb.abstasks.sts.AbsTaskSTS`` whose ``embedlessons_data`` holds the
    :class:`~embedlessons.data.ScoredPairs` it evaluates (N pairs: sentences1 [N], sentences2 [N], scores [N]).
    """
    base, _ = _task_classes()
    pairs = load_sts(name, split)
    if max_pairs is not None:
        max_pairs = _positive_int(max_pairs, "max_pairs", minimum=2)
        pairs = ScoredPairs(pairs.name, pairs.split, pairs.sentences1[:max_pairs], pairs.sentences2[:max_pairs],
                            pairs.scores[:max_pairs])
    _, lo, hi = _STS[name]
    digest = _digest([pairs.sentences1, pairs.sentences2, np.asarray(pairs.scores).tolist()])
    return _make_task(base, name, split, pairs, "STS", "cosine_spearman",
                      f"embedlessons {name} {split}: {len(pairs)} pairs, gold scores {lo:g}-{hi:g}",
                      digest, min_score=lo, max_score=hi)


def local_retrieval_task(name: str = "scifact", split: str = "test", n_distractors: int | None = None,
                         max_queries: int | None = None) -> AbsTask:
    """An MTEB retrieval task (main score ``ndcg_at_10``) on ``embedlessons.data.load_retrieval(name, split)``.

    Args:
        name: ``"scifact"``, ``"cmrc2018"`` or a BEIR-layout folder; unknown names raise
            ``embedlessons.data.UnknownDatasetError``.
        split: the qrels split, e.g. ``"test"``.
        n_distractors: keep only the documents relevant to the (kept) queries plus this many random others
            (``RetrievalDataset.subset(n_distractors, seed=0)``); None keeps the whole corpus.
        max_queries: keep only the first ``max_queries`` queries (applied before ``n_distractors``, so the
            corpus holds their relevant documents and the distractors, nothing else).

    Returns an ``mteb.abstasks.retrieval.AbsTaskRetrieval`` whose ``embedlessons_data`` holds the
    :class:`~embedlessons.data.RetrievalDataset` it evaluates. Documents are embedded as
    :func:`mteb_document_texts`; queries as they are.
    """
    _, base = _task_classes()
    ds = load_retrieval(name, split)
    if max_queries is not None:
        qids = list(ds.queries)[:_positive_int(max_queries, "max_queries")]
        ds = RetrievalDataset(ds.name, ds.split, ds.corpus, {q: ds.queries[q] for q in qids},
                              {q: ds.qrels[q] for q in qids})
    if n_distractors is not None:
        ds = ds.subset(n_distractors, seed=0)
    task_name = Path(str(name)).name or str(name)
    digest = _digest([ds.doc_ids, mteb_document_texts(ds), ds.queries, ds.qrels])
    return _make_task(base, task_name, split, ds, "Retrieval", "ndcg_at_10",
                      f"embedlessons {task_name} {split}: {len(ds.queries)} queries, {len(ds.corpus)} documents",
                      digest)


def run_mteb(encoder: MTEBEncoder, tasks: AbsTask | Iterable[AbsTask]) -> dict[str, dict[str, float]]:
    """Run ``mteb.evaluate`` on ``tasks`` and return their main scores, flat.

    Runs with ``cache=None`` (MTEB's default ``ResultCache`` under ``~/.cache/mteb`` would return old results
    for a model name + revision it has seen, without running anything), ``overwrite_strategy="always"``,
    ``raise_error=True`` (with False a failing task is only logged and left out), no CO2 tracking, and
    Python's / NumPy's / torch's global random states restored afterwards.

    Args:
        encoder: an :class:`MTEBEncoder`.
        tasks: one task or several, with distinct names (from :func:`local_sts_task`,
            :func:`local_retrieval_task`, or any MTEB task whose data are available offline).

    Returns:
        ``{task name: {score: value}}``: STS tasks give :data:`STS_SCORES` (correlations in [-1, 1]),
        retrieval tasks :data:`RETRIEVAL_SCORES` (in [0, 1]; NDCG, MAP and recall rounded by MTEB to 5
        decimals), each with ``"main_score"``.
    """
    mteb = _require_mteb()
    from mteb.abstasks.abstask import AbsTask

    if not isinstance(encoder, MTEBEncoder):
        raise TypeError(f"run_mteb needs an MTEBEncoder, got {type(encoder).__name__}; wrap the model: "
                        "run_mteb(MTEBEncoder(model, max_length=...), tasks)")
    tasks = [tasks] if isinstance(tasks, AbsTask) else list(tasks)
    if not tasks or not all(isinstance(t, AbsTask) for t in tasks):
        raise TypeError("tasks must be an MTEB task or a non-empty list of them (e.g. local_sts_task())")
    names = [t.metadata.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {names}")
    with global_rng_kept():
        result = mteb.evaluate(encoder, tasks, cache=None, overwrite_strategy="always", raise_error=True,
                               co2_tracker=False, show_progress_bar=False,
                               encode_kwargs={"batch_size": encoder.batch_size, "show_progress_bar": False})
    if getattr(result, "exceptions", None):
        raise RuntimeError(f"mteb reported errors: {result.exceptions}")
    out: dict[str, dict[str, float]] = {}
    by_name = {tr.task_name: tr for tr in result.task_results}
    for task in tasks:
        name = task.metadata.name
        if name not in by_name:
            raise RuntimeError(f"mteb returned no result for task {name!r}")
        split = task.metadata.eval_splits[0]
        scores = by_name[name].scores[split][0]
        wanted = STS_SCORES if task.metadata.type == "STS" else RETRIEVAL_SCORES
        out[name] = {k: float(scores[k]) for k in (*wanted, "main_score") if k in scores}
    return out
