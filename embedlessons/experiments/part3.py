"""The hard-negative experiments of Part 3 (sections 3.1, 3.3 and 3.4), as reusable functions.

Part 3's notebooks ask one question in several forms: *which negatives should a retriever be trained
against?* This module holds the pieces they share, so that each notebook shows the experiment and not
the plumbing:

1. **Data** (:func:`training_pool`, :func:`evaluation_subset`, :func:`training_rows`): SciFact
   (Wadden et al. 2020, BEIR format) training claims with a *mining pool* (every abstract relevant to a
   training claim plus random others), and a test subset for evaluation. At CPU scale both are
   reduced; the full-size setting passes ``None``.
2. **Negatives** (:func:`mine_negatives`, :func:`row_negatives`, :func:`build_triplets`,
   :class:`ResampleNegatives`): random, BM25 or dense negatives from :mod:`embedlessons.negatives`, one
   per (claim, relevant abstract) row, optionally redrawn every step with a hard-ratio schedule.
3. **What one negative contributes** (:func:`contrastive_signal`, :func:`parameter_grad_norms`): the
   InfoNCE loss of each query and the size of its gradient, for section 3.1.
4. **Fine-tune and evaluate** (:func:`fine_tune`, :func:`evaluate_per_query`, :func:`paired_test`):
   in-batch InfoNCE (:func:`~embedlessons.losses.in_batch_info_nce`) plus the mined negative as an extra
   column, through :func:`embedlessons.training.train` with its run cache, then NDCG@10 per test query
   and a paired randomisation test between two runs.

Example::

    >>> pool = training_pool(1000)
    >>> rows = training_rows(pool)
    >>> mined, report = mine_negatives("bm25", pool, depth=30, filters=[RelativeMargin(0.05)])
    >>> triplets = build_triplets(pool, rows, row_negatives(mined, pool, rows))
    >>> model, history = fine_tune(triplets, TrainConfig(steps=12, batch_size=16, max_length=64))
    >>> ndcg = evaluate_per_query(model, evaluation_subset())
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import RetrievalDataset, load_retrieval
from ..evaluation import ndcg_at_k
from ..negatives import FilterReport, MinedNegatives, MixedSampler, apply_filters, mine_bm25, mine_dense, \
    random_negatives

__all__ = ["MINERS", "training_pool", "evaluation_subset", "leaked_queries", "training_rows", "mine_negatives",
           "row_negatives", "build_triplets", "ResampleNegatives", "contrastive_signal", "parameter_grad_norms",
           "TrainTopLayers", "fine_tune", "evaluate_per_query", "paired_test", "full_size_comparison",
           "merge_full_size", "recorded_full_size"]

MINERS = ("random", "bm25", "dense")


# ============================================================================================== data
def _relevant_docs(ds: RetrievalDataset) -> set[str]:
    return {d for rel in ds.qrels.values() for d, g in rel.items() if g > 0}


def training_pool(n_docs: int | None = 1000, seed: int = 0, name: str = "scifact") -> RetrievalDataset:
    """The training claims of SciFact with a mining pool of ``n_docs`` abstracts.

    The pool holds every abstract relevant to some training claim (565 for SciFact) plus random others
    (seeded), in corpus order; ``n_docs=None`` keeps the whole corpus (5,183). Negatives of every kind
    are drawn from the same pool, so runs differ only in *how* they pick.
    """
    ds = load_retrieval(name, "train")
    if n_docs is None:
        return ds
    n_rel = len(_relevant_docs(ds))
    if not n_rel <= n_docs <= len(ds.corpus):
        raise ValueError(f"n_docs must be between {n_rel} (the relevant abstracts) and {len(ds.corpus)}, "
                         f"got {n_docs}")
    return ds.subset(n_docs - n_rel, seed=seed)


def evaluation_subset(n_distractors: int | None = 217, seed: int = 0, name: str = "scifact") -> RetrievalDataset:
    """SciFact test (300 claims) over every relevant abstract + ``n_distractors`` random others
    (``None``: the full corpus). The default gives 500 abstracts."""
    ds = load_retrieval(name, "test")
    return ds if n_distractors is None else ds.subset(n_distractors, seed=seed)


def leaked_queries(train: RetrievalDataset, test: RetrievalDataset | None = None) -> set[str]:
    """Ids of ``train`` queries whose text is also a query of ``test`` (default: the test split of the same
    dataset). SciFact's training split repeats two test claims word for word; training on them would
    inflate the test score (section 2.5 shows them)."""
    test = load_retrieval(train.name, "test") if test is None else test
    test_texts = set(test.queries.values())
    return {q for q, text in train.queries.items() if text in test_texts}


def training_rows(ds: RetrievalDataset, max_rows: int | None = None, seed: int = 0,
                  drop_test_claims: bool = True) -> list[tuple[str, str]]:
    """One ``(query_id, relevant doc_id)`` row per positive qrel, in qrels order; a seeded random subset
    of ``max_rows`` rows (kept in that order) when given. ``drop_test_claims``: leave out training
    queries that are also test queries (:func:`leaked_queries`; only for a ``train`` split)."""
    leaked = leaked_queries(ds) if drop_test_claims and ds.split == "train" else set()
    rows = [(q, d) for q, rel in ds.qrels.items() for d, g in rel.items()
            if g > 0 and q in ds.queries and q not in leaked]
    if not rows:
        raise ValueError(f"{ds!r} has no (query, relevant document) pair")
    if max_rows is not None and max_rows < len(rows):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_rows, replace=False))
        rows = [rows[i] for i in keep]
    return rows


# ============================================================================================== negatives
def _texts(ds: RetrievalDataset) -> dict[str, str]:
    return dict(zip(ds.doc_ids, ds.doc_texts()))


def mine_negatives(kind: str, ds: RetrievalDataset, *, model=None, depth: int = 30, filters: Sequence = (),
                   query_max_length: int = 64, doc_max_length: int = 64,
                   seed: int = 0) -> tuple[MinedNegatives, FilterReport | None]:
    """Candidates for every query of ``ds`` from its corpus, positives excluded, hardest first.

    Args:
        kind: ``"random"`` (uniform; filters do not apply), ``"bm25"`` or ``"dense"`` (needs ``model``).
        ds: queries, corpus (the mining pool) and qrels.
        depth: candidates per query before filtering.
        filters: false-negative filters from :mod:`embedlessons.negatives` (e.g. ``RelativeMargin(0.05)``).
        query_max_length, doc_max_length: token limits of the dense encoder (embeddings are cached).

    Returns:
        ``(mined, report)``: the kept candidates and the :class:`FilterReport` (None for random).
    """
    qids = [q for q in ds.queries if ds.qrels.get(q)]
    queries = {q: ds.queries[q] for q in qids}
    qrels = {q: ds.qrels[q] for q in qids}
    if kind == "random":
        return random_negatives(qids, ds.doc_ids, qrels, n=depth, seed=seed), None
    if kind == "bm25":
        mined = mine_bm25(queries, ds.doc_ids, ds.doc_texts(), qrels, depth=depth)
    elif kind == "dense":
        if model is None:
            raise ValueError("dense mining needs a model (the bi-encoder whose nearest neighbours become negatives)")
        mined = mine_dense(queries, ds.doc_ids, qrels, depth=depth, model=model, doc_texts=ds.doc_texts(),
                           query_max_length=query_max_length, doc_max_length=doc_max_length)
    else:
        raise ValueError(f"unknown miner {kind!r}; choose one of {MINERS}")
    return apply_filters(mined, filters) if filters else (mined, None)


def row_negatives(mined: MinedNegatives, ds: RetrievalDataset, rows: Sequence[tuple[str, str]],
                  hard_ratio: float = 1.0, step: int = 0, seed: int = 0) -> list[str]:
    """One negative doc id per row: the best-ranked kept candidate of the row's query with probability
    ``hard_ratio``, else a random non-positive abstract of the pool (also when a query has no candidate
    left). Drawn with :class:`~embedlessons.negatives.MixedSampler` (``hard_pool=1``, ``"top"``)."""
    sampler = _sampler(mined, ds, hard_ratio, seed)
    return [sampler.sample(q, 1, step=step)[0] for q, _ in rows]


def _sampler(mined: MinedNegatives, ds: RetrievalDataset, hard_ratio, seed: int) -> MixedSampler:
    qrels = {q: ds.qrels[q] for q in mined.query_ids}
    return MixedSampler(mined, ds.doc_ids, qrels, hard_ratio=hard_ratio, hard_pool=1, hard_strategy="top", seed=seed)


def build_triplets(ds: RetrievalDataset, rows: Sequence[tuple[str, str]], negative_ids: Sequence[str]):
    """A :class:`~embedlessons.training.TripletDataset` of (claim, relevant abstract, negative abstract) texts
    (abstract = title + " " + text, as everywhere in the book)."""
    from ..training import TripletDataset

    if len(rows) != len(negative_ids):
        raise ValueError(f"{len(rows)} rows but {len(negative_ids)} negatives")
    text = _texts(ds)
    clash = [(q, n) for (q, _), n in zip(rows, negative_ids) if n in ds.qrels.get(q, {})]
    if clash:
        raise ValueError(f"{len(clash)} negatives are positives of their own query, e.g. {clash[:2]}")
    missing = [d for _, d in rows if d not in text] + [n for n in negative_ids if n not in text]
    if missing:
        raise ValueError(f"{len(missing)} doc ids are not in the pool, e.g. {missing[:3]}")
    return TripletDataset([ds.queries[q] for q, _ in rows], [text[d] for _, d in rows],
                          [text[n] for n in negative_ids])


class ResampleNegatives:
    """Training callback: before every step, redraw each row's negative with a hard-ratio schedule.

    With ``hard_ratio=linear_ramp(0, 1, steps)`` the run starts on random negatives and ends on the
    mined ones: a curriculum from easy to hard (Bengio et al. 2009). Each row's draw depends only on
    (seed, query, step), so runs are reproducible. Logs ``hard_ratio`` at every step.

    Args:
        mined: the hard candidates (see :func:`mine_negatives`).
        ds: the pool (random negatives come from its corpus; positives are never drawn).
        rows: the dataset's ``(query_id, doc_id)`` rows, in dataset order.
        hard_ratio: a float or a schedule ``step -> ratio`` (:func:`~embedlessons.negatives.linear_ramp`).
    """

    def __init__(self, mined: MinedNegatives, ds: RetrievalDataset, rows: Sequence[tuple[str, str]],
                 hard_ratio, seed: int = 0):
        self.rows, self.seed = list(rows), seed
        self.sampler = _sampler(mined, ds, hard_ratio, seed)
        self.text = _texts(ds)
        h = hashlib.blake2b(digest_size=12)
        h.update(json.dumps([mined.method, {q: [c.doc_id for c in cs] for q, cs in mined.candidates.items()},
                             ds.doc_ids, self.rows, seed, repr(self.sampler)], sort_keys=True).encode())
        self.cache_key = f"ResampleNegatives-{h.hexdigest()}"

    def on_step_begin(self, state) -> None:
        step = state.step
        negatives = [self.text[self.sampler.sample(q, 1, step=step)[0]] for q, _ in self.rows]
        state.dataset.set_negatives(range(len(self.rows)), negatives)
        state.history.log(step, hard_ratio=self.sampler.ratio(step))

    def __repr__(self) -> str:
        return f"ResampleNegatives({self.sampler!r}, rows={len(self.rows)})"


# ============================================================================================== section 3.1
def contrastive_signal(queries, positives, negatives, temperature: float = 0.05) -> dict[str, np.ndarray]:
    """Per-query InfoNCE loss and gradient norm with respect to the query vector.

    Args:
        queries: [B, d] query embeddings; positives: [B, d]; negatives: [B, K, d] (NumPy or torch).
            All are L2-normalised here, as the loss does.
        temperature: t of the softmax over the K+1 candidates.

    Returns:
        ``loss`` [B] (``-log p(positive)``), ``grad_norm`` [B] (``||dloss/dq||`` for the normalised query
        q, which equals ``||sum_j p_j c_j - c_pos|| / t`` over all candidates c_j), ``p_positive`` [B].

    References: Oord et al. (2018) InfoNCE; Xiong et al. (2021), ANCE, Sec. 3, bound the gradient norm
    of a negative by its softmax weight: a negative with near-zero loss contributes near-zero gradient.
    """
    q, p, n = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (queries, positives, negatives))
    if q.dim() != 2 or p.shape != q.shape or n.dim() != 3 or n.shape[0] != q.shape[0] or n.shape[2] != q.shape[1]:
        raise ValueError(f"expected queries [B, d], positives [B, d], negatives [B, K, d]; got "
                         f"{tuple(q.shape)}, {tuple(p.shape)}, {tuple(n.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = F.normalize(q, dim=-1).requires_grad_(True)
    p, n = F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    logits = torch.cat([(q * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", q, n)], dim=1) / temperature
    loss = -torch.log_softmax(logits, dim=1)[:, 0]
    (grad,) = torch.autograd.grad(loss.sum(), q)      # rows are independent: row i's gradient is its own
    return {"loss": loss.detach().numpy(), "grad_norm": grad.norm(dim=1).numpy(),
            "p_positive": torch.softmax(logits, dim=1)[:, 0].detach().numpy()}


def parameter_grad_norms(model, query_texts: Sequence[str], positives, negatives, temperature: float = 0.05,
                         max_length: int = 64) -> np.ndarray:
    """Per-query norm of the gradient of the InfoNCE loss with respect to the model's weights.

    Each query is encoded and back-propagated on its own (documents stay fixed vectors: this is the
    query tower's share of the gradient), so the norms are per example, not per batch.
    Dropout is off (eval mode) so the numbers are deterministic. One query is too small a job to split
    over threads (on a small busy machine, threads mostly wait for each other), so this runs on one
    thread. Returns float64 [B].
    """
    positives = torch.as_tensor(np.asarray(positives), dtype=torch.float32)
    negatives = torch.as_tensor(np.asarray(negatives), dtype=torch.float32)
    if len(query_texts) != len(positives) or len(positives) != len(negatives):
        raise ValueError(f"{len(query_texts)} queries, {len(positives)} positives, {len(negatives)} negative rows")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(1)
    norms = np.zeros(len(query_texts))
    try:
        for i, text in enumerate(query_texts):
            q = model(model.tokenize([text], max_length=max_length))
            cands = torch.cat([positives[i:i + 1], negatives[i]], dim=0)
            logits = F.normalize(q, dim=-1) @ F.normalize(cands, dim=-1).T / temperature
            loss = -torch.log_softmax(logits, dim=1)[0, 0]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms[i] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return norms


# ============================================================================================== sections 3.3, 3.4
class TrainTopLayers:
    """Training callback: train only the top ``n`` transformer layers (and the pooling, which has no weights).

    The token embeddings and the lower layers are frozen at the start of training and unfrozen at the end,
    so back-propagation stops early: with MiniLM's 6 layers and ``n=3``, a step costs about a third less
    on a CPU. A CPU-scale reduction, applied identically to every run it is compared with; the trainer's
    run cache sees it through ``cache_key``. Works for BERT-style encoders (``transformer.encoder.layer``).
    """

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1 (layers to train), got {n!r}")
        self.n = n
        self.cache_key = f"TrainTopLayers({n})"
        self._frozen: list[torch.nn.Parameter] = []

    def on_train_begin(self, state) -> None:
        transformer = state.model.transformer
        layers = getattr(getattr(transformer, "encoder", None), "layer", None)
        if layers is None:
            raise TypeError(f"TrainTopLayers needs a BERT-style encoder (transformer.encoder.layer), got "
                            f"{type(transformer).__name__}")
        if self.n > len(layers):
            raise ValueError(f"cannot train the top {self.n} layers of a {len(layers)}-layer model")
        keep = {id(p) for layer in list(layers)[len(layers) - self.n:] for p in layer.parameters()}
        self._frozen = [p for p in transformer.parameters() if p.requires_grad and id(p) not in keep]
        for p in self._frozen:
            p.requires_grad_(False)

    def on_train_end(self, state) -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []

    def __repr__(self) -> str:
        return self.cache_key


def fine_tune(dataset, config, callbacks: Sequence = (), model="all-MiniLM-L6-v2", temperature: float = 0.05,
              train_top_layers: int | None = None, cache: bool = True, progress: bool = False):
    """Fine-tune a bi-encoder with in-batch InfoNCE plus the dataset's negative column.

    Each row's own negative becomes an extra candidate for *every* query of the batch (as in DPR's
    "gold + BM25" setting and sentence-transformers' MultipleNegativesRankingLoss), so a batch of B rows
    scores each query against 2B abstracts. ``model`` is a name for :func:`~embedlessons.models.load_model`
    (a fresh copy is loaded) or a :class:`~embedlessons.models.BiEncoder` (trained in place).
    ``train_top_layers``: train only that many top layers (:class:`TrainTopLayers`; None trains all).
    Uses the trainer's run cache (``cache=True``): an identical run is loaded, not retrained.
    ``progress``: show the trainer's progress bar (long runs). Returns ``(model, history)``.
    """
    from ..losses import in_batch_info_nce
    from ..models import load_model
    from ..training import train

    if isinstance(model, str):
        model = load_model(model)
    callbacks = ([TrainTopLayers(train_top_layers)] if train_top_layers else []) + list(callbacks)
    history = train(model, dataset, partial(in_batch_info_nce, temperature=temperature), config,
                    callbacks=callbacks, cache=cache, progress=progress)
    return model, history


def evaluate_per_query(model, ds: RetrievalDataset, k: int = 10, query_max_length: int = 64,
                       doc_max_length: int = 64, batch_size: int = 32, progress: bool = False) -> dict[str, float]:
    """NDCG@k of every query of ``ds`` under dense retrieval with ``model`` (embeddings cached by the
    model's fingerprint, so an unchanged model is not re-encoded; ``progress`` shows the encoding bar)."""
    from ..retrieval import dense_run

    qv = model.encode(list(ds.queries.values()), max_length=query_max_length, batch_size=batch_size,
                      progress=progress)
    dv = model.encode(ds.doc_texts(), max_length=doc_max_length, batch_size=batch_size, progress=progress)
    return ndcg_at_k(ds.qrels, dense_run(qv, dv, ds, top_k=max(k, 100)), k=k, per_query=True)


def paired_test(a: Mapping[str, float], b: Mapping[str, float], n_resamples: int = 10_000,
                seed: int = 0) -> dict[str, float]:
    """Paired randomisation (sign-flip) test and bootstrap interval of mean(a - b) over the queries both score.

    Steps, on the per-query differences d_i = a[q_i] - b[q_i]:

    1. ``diff`` = mean(d).
    2. p: if the two runs were interchangeable, each d_i could as well have had the opposite sign. Flip every
       sign at random ``n_resamples`` times; p is the share of flipped means with |mean| >= |diff|, counting
       the observed signs as one more draw ((extreme + 1) / (n_resamples + 1), so p > 0). Two-sided.
    3. 95% interval: resample the queries with replacement ``n_resamples`` times; ``ci_low`` and ``ci_high``
       are the 2.5% and 97.5% quantiles of the resampled means (the percentile bootstrap).

    Args:
        a, b: query id -> score (e.g. NDCG@10 per query) of two runs; only queries in both are used.
        n_resamples: sign flips, and bootstrap resamples. seed: seeds both, so results are reproducible.

    Returns:
        ``{"diff", "p", "ci_low", "ci_high"}`` as floats.

    References:
        Smucker, Allan and Carterette (2007), "A comparison of statistical significance tests for
        information retrieval evaluation" (they recommend the randomisation test); Efron and Tibshirani
        (1993), "An Introduction to the Bootstrap".

    Example:
        >>> t = paired_test({"q1": 0.9, "q2": 0.6, "q3": 1.0}, {"q1": 0.6, "q2": 0.5, "q3": 1.0})
        >>> round(t["diff"], 3), t["ci_low"] <= t["diff"] <= t["ci_high"]
        (0.133, True)
    """
    common = [q for q in a if q in b]
    if len(common) < 2:
        raise ValueError(f"need at least 2 queries scored by both runs, got {len(common)}")
    d = np.array([a[q] - b[q] for q in common], dtype=np.float64)
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, len(d)))
    extreme = int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    boot = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
    return {"diff": float(d.mean()), "p": (extreme + 1) / (n_resamples + 1),
            "ci_low": float(np.quantile(boot, 0.025)), "ci_high": float(np.quantile(boot, 0.975))}


# ============================================================================================== full size (3.3)
#: Name of the recorded full-size run (``embedlessons/results/<name>.json``, :mod:`embedlessons.recorded`).
FULL_SIZE_EXPERIMENT = "scifact_hardneg_full_size"
FULL_SIZE_KINDS = ("random", "bm25", "dense", "mixed")


def full_size_comparison(kinds: Sequence[str] = FULL_SIZE_KINDS, *, device: str | None = None, steps: int = 150,
                         batch_size: int = 32, lr: float = 2e-5, query_max_length: int = 64,
                         doc_max_length: int = 256, seed: int = 0, model: str = "all-MiniLM-L6-v2",
                         pool_docs: int | None = None, test_distractors: int | None = None,
                         progress: bool = True) -> dict:
    """Section 3.3 at full size: the whole SciFact corpus (5,183 abstracts) for mining and evaluation.

    For each kind of negative (``random``, ``bm25``, ``dense`` or ``mixed``: a ramp from random to dense),
    fine-tune all of MiniLM (in-batch InfoNCE + one mined negative per row, temperature 0.05, AdamW with 10%
    warmup) and score SciFact test NDCG@10 over the full corpus, beside BM25 and the off-the-shelf model.
    Hard negatives are filtered with ``RelativeMargin(0.05)`` as in the CPU-scale runs. On a 2-core CPU one
    kind took 27 minutes of training and 2 of evaluation (the recorded run, :func:`recorded_full_size`);
    ``python -m embedlessons.experiments run scifact_hardneg_full_size --set kinds='["dense"]' [--append]``
    (or this module's own command line, ``python -m embedlessons.experiments.part3 --help``) runs kinds
    separately and merges them.

    ``pool_docs`` and ``test_distractors`` shrink the mining pool and the test corpus
    (:func:`training_pool`, :func:`evaluation_subset`; None = the full corpus), for quick checks.

    Returns a JSON-ready dict: ``settings``, ``ndcg`` (mean NDCG@10 per run), ``vs_minilm`` (paired test of
    each fine-tune against the off-the-shelf model, :func:`paired_test`), ``seconds`` (training and
    evaluation wall time per kind) and ``per_query`` (NDCG@10 of every test claim per run).
    """
    import platform

    from ..lexical import bm25_run
    from ..models import load_model
    from ..negatives import RelativeMargin, linear_ramp
    from ..training import TrainConfig

    unknown = [k for k in kinds if k not in FULL_SIZE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown kinds of negative {unknown}; choose from {FULL_SIZE_KINDS}")
    lengths = {"query_max_length": query_max_length, "doc_max_length": doc_max_length}
    pool, test = training_pool(pool_docs, seed=seed), evaluation_subset(test_distractors, seed=seed)
    rows = training_rows(pool)
    base = load_model(model, device=device)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1,
                         max_length=(query_max_length, doc_max_length, doc_max_length), seed=seed)
    per_query = {"BM25": ndcg_at_k(test.qrels, bm25_run(test.doc_texts(), test.doc_ids, test.queries, top_k=100),
                                   k=10, per_query=True),
                 "MiniLM": evaluate_per_query(base, test, progress=progress, **lengths)}
    mined: dict[str, MinedNegatives] = {}
    seconds: dict[str, dict[str, float]] = {}
    for kind in kinds:
        miner = "dense" if kind == "mixed" else kind
        if miner not in mined:
            filters = [] if miner == "random" else [RelativeMargin(0.05)]
            mined[miner] = mine_negatives(miner, pool, model=base if miner == "dense" else None,
                                          depth=1 if miner == "random" else 30, filters=filters, seed=seed,
                                          **lengths)[0]
        ratio = 0.0 if kind == "mixed" else 1.0
        dataset = build_triplets(pool, rows, row_negatives(mined[miner], pool, rows, hard_ratio=ratio, seed=seed))
        callbacks = []
        if kind == "mixed":      # start on random negatives, end on dense ones
            callbacks = [ResampleNegatives(mined["dense"], pool, rows, linear_ramp(0.0, 1.0, steps), seed=seed)]
        tuned, history = fine_tune(dataset, config, callbacks=callbacks, model=load_model(model, device=device),
                                   progress=progress)
        started = time.perf_counter()
        per_query[kind] = evaluate_per_query(tuned, test, progress=progress, **lengths)
        seconds[kind] = {"train": history.meta.get("train_seconds"),
                         "evaluate": round(time.perf_counter() - started, 1)}
        if progress:
            print(f"{kind}: NDCG@10 {np.mean(list(per_query[kind].values())):.4f}", flush=True)
    return {"settings": {"kinds": list(kinds), "model": model, "device": str(base.device), "steps": steps,
                         "batch_size": batch_size, "lr": lr, "warmup_ratio": 0.1, "temperature": 0.05, "seed": seed,
                         **lengths,
                         "training_rows": len(rows), "corpus": len(test.doc_ids), "test_claims": len(test.queries),
                         "filter": "RelativeMargin(0.05)", "torch_threads": torch.get_num_threads(),
                         "machine": platform.processor() or platform.machine()},
            "ndcg": {k: float(np.mean(list(v.values()))) for k, v in per_query.items()},
            "vs_minilm": {k: paired_test(per_query[k], per_query["MiniLM"]) for k in kinds},
            "seconds": seconds,
            "per_query": per_query}


def merge_full_size(results: Sequence[dict]) -> dict:
    """Merge :func:`full_size_comparison` results run separately (e.g. one kind of negative per command on
    a CPU) into one. Raises if their settings (other than ``kinds``) or their baselines differ, or if a
    kind appears twice; ``runs`` lists every command."""
    if not results:
        raise ValueError("nothing to merge")
    merged = json.loads(json.dumps(results[0]))
    same = {k: v for k, v in merged["settings"].items() if k != "kinds"}
    for other in results[1:]:
        theirs = {k: v for k, v in other["settings"].items() if k != "kinds"}
        if theirs != same:
            diff = sorted(k for k in set(same) | set(theirs) if same.get(k) != theirs.get(k))
            raise ValueError(f"cannot merge runs with different settings: {diff}")
        for baseline in ("BM25", "MiniLM"):
            if other["per_query"][baseline] != merged["per_query"][baseline]:
                raise ValueError(f"cannot merge runs whose {baseline} baseline differs")
        twice = set(other["settings"]["kinds"]) & set(merged["settings"]["kinds"])
        if twice:
            raise ValueError(f"kinds {sorted(twice)} appear in more than one run")
        merged["settings"]["kinds"] += other["settings"]["kinds"]
        for key in ("ndcg", "vs_minilm", "seconds", "per_query"):
            merged[key].update(other[key])
        merged["runs"] = merged.get("runs", []) + other.get("runs", [])
    return merged


def recorded_full_size(results_dir: str | Path | None = None) -> dict:
    """The recorded output of :func:`full_size_comparison`, with the commands, settings, versions, machines
    and dates of its runs (``runs``): the full-size numbers section 3.3 quotes
    (:func:`embedlessons.recorded.load_result`)."""
    from ..recorded import load_result

    return load_result(FULL_SIZE_EXPERIMENT, results_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run :func:`full_size_comparison` as a recorded experiment and write its result as JSON.

    The same as ``python -m embedlessons.experiments run scifact_hardneg_full_size`` with the options below
    as ``--set`` overrides.
    """
    import argparse
    import shlex
    import sys

    from ..recorded import result_path, run_experiment

    parser = argparse.ArgumentParser(prog="python -m embedlessons.experiments.part3",
                                     description="Section 3.3 at full size: SciFact hard-negative fine-tunes of "
                                                 "MiniLM, full-corpus NDCG@10.")
    parser.add_argument("--kinds", nargs="+", default=list(FULL_SIZE_KINDS), choices=FULL_SIZE_KINDS)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--doc-max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the result as JSON here (default: {result_path(FULL_SIZE_EXPERIMENT)})")
    parser.add_argument("--append", action="store_true",
                        help="merge into the result already in --out (other kinds, same settings)")
    args = parser.parse_args(argv)
    out = args.out or result_path(FULL_SIZE_EXPERIMENT)
    if args.append and not out.exists():
        parser.error(f"--append needs an existing result file ({out})")
    overrides = {"kinds": args.kinds, "device": args.device, "steps": args.steps, "batch_size": args.batch_size,
                 "lr": args.lr, "doc_max_length": args.doc_max_length, "seed": args.seed}
    command = "python -m embedlessons.experiments.part3 " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = run_experiment(FULL_SIZE_EXPERIMENT, overrides, out=out, append=args.append, command=command)
    for name, value in result["ndcg"].items():
        print(f"{name:8s} NDCG@10 {value:.4f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
