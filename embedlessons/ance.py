"""ANCE-style dynamic negatives: re-mine with the model being trained, every N steps.

Static negatives (BM25, or a frozen model's) go stale: as the model learns, the documents *it* ranks
high change, and the negatives it was given become easy. ANCE (Xiong et al. 2021, "Approximate Nearest
Neighbor Negative Contrastive Learning for Dense Text Retrieval") re-encodes the corpus with a recent
checkpoint, rebuilds the ANN index and re-mines negatives from it while training goes on. ANCE runs
the refresh asynchronously on separate GPUs; here it is synchronous and simple: training pauses, and
:class:`ANCERefresh` (a callback for :func:`embedlessons.training.train`) does, before every
``every_n_steps``-th step,

1. encode the whole corpus and the training queries with the current model (no embedding cache: the
   weights change every step);
2. build a FAISS index over the documents (:mod:`embedlessons.indexing`; exact ``"flat"`` by default);
3. mine each query's ``depth`` nearest non-positive documents (:func:`~embedlessons.negatives.mine_dense`),
   drop likely false negatives with ``filters`` (:func:`~embedlessons.negatives.apply_filters`);
4. give each training row ``n_negatives`` of them (``TripletDataset.set_negatives``).

It logs into the training history ``refresh_seconds`` (wall time of the refresh), ``negatives_changed``
(share of rows whose negatives changed) and ``filtered`` (candidates the filters removed) at refresh
steps, and ``index_age`` (optimiser updates since the negatives were mined) at every step.

Example::

    >>> ds = load_retrieval("scifact", "train")
    >>> refresh = ANCERefresh(ds.doc_texts(), ds.doc_ids, ds.qrels, every_n_steps=50, n_negatives=1,
    ...                       queries=ds.queries, filters=[RankWindow(skip_top=3)])
    >>> history = train(model, triplets, loss, config, callbacks=[refresh])
    >>> history.values("index_age")
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Mapping, Sequence

import numpy as np

from .indexing import build_index
from .negatives import Positives, _check_corpus, _check_depth, _check_positives_in_corpus, _draw_excluding, _rng, \
    apply_filters, mine_dense, normalize_positives

__all__ = ["ANCERefresh"]


class ANCERefresh:
    """Training callback: every ``every_n_steps`` steps, re-mine the rows' negatives with the current model.

    Args:
        corpus_texts, doc_ids: the corpus negatives come from (texts in ``doc_ids`` order).
        positives: qrels ``{query_id: {doc_id: grade}}`` or ``{query_id: [doc_id, ...]}``; never negatives.
        every_n_steps: refresh before steps N+1, 2N+1, ... (so each index serves N updates).
        n_negatives: negatives per row; must equal the dataset's (1 for a plain triplet dataset).
        queries: query_id -> text, to find which query each dataset row belongs to (by its anchor text).
            Without it, ``positives`` must be keyed by the anchor texts themselves.
        filters: false-negative filters applied to each query's candidates (see :mod:`.negatives`).
        depth: candidates mined per query before filtering.
        index: FAISS index kind (``"flat"``, ``"hnsw"``, ``"ivf"`` ...) and ``index_params`` its parameters.
        sample: ``"top"`` (the hardest kept candidates) or ``"random"`` (uniform among the kept ones,
            seeded by ``seed``, step and row).
        refresh_at_start: also mine before step 1 (otherwise the dataset's initial negatives are used
            first, e.g. BM25 ones).
        query_max_length, doc_max_length, batch_size: encoding settings.

    A row whose query keeps fewer than ``n_negatives`` candidates after filtering gets random
    non-positive documents for the rest (counted in the logged ``rows_topped_up``).
    """

    def __init__(self, corpus_texts: Sequence[str], doc_ids: Sequence[str], positives: Positives,
                 every_n_steps: int, n_negatives: int = 1, *, queries: Mapping[str, str] | None = None,
                 filters: Sequence = (), depth: int = 30, index: str = "flat", index_params: dict | None = None,
                 sample: str = "top", refresh_at_start: bool = False, query_max_length: int = 64,
                 doc_max_length: int = 128, batch_size: int = 64, seed: int = 0):
        self.row = _check_corpus(doc_ids, corpus_texts)
        self.corpus_texts, self.doc_ids = list(corpus_texts), list(doc_ids)
        self.positives = normalize_positives(positives)
        _check_positives_in_corpus(self.positives, self.row)
        for name, value in (("every_n_steps", every_n_steps), ("n_negatives", n_negatives), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if n_negatives > depth:
            raise ValueError(f"n_negatives ({n_negatives}) cannot exceed depth ({depth})")
        if sample not in ("top", "random"):
            raise ValueError(f"sample must be 'top' or 'random', got {sample!r}")
        self.every_n_steps, self.n_negatives, self.depth = int(every_n_steps), int(n_negatives), int(depth)
        self.queries = dict(queries) if queries is not None else None
        self.filters, self.index_kind, self.index_params = list(filters), index, dict(index_params or {})
        self.sample, self.refresh_at_start, self.seed = sample, refresh_at_start, seed
        self.query_max_length, self.doc_max_length, self.batch_size = query_max_length, doc_max_length, batch_size
        self.last_refresh_step = 0  # negatives in use were mined before this step (0 = the initial ones)
        self.refreshes: list[dict] = []  # one record per refresh (step, seconds, ...), also logged
        self._row_qids: list[str] | None = None

    # ---- the run-cache key of the trainer (train(..., cache=True)) describes the callback by this
    @property
    def cache_key(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        h.update(json.dumps([self.doc_ids, self.positives, self.queries], sort_keys=True).encode())
        for t in self.corpus_texts:
            h.update(t.encode())
        settings = [self.every_n_steps, self.n_negatives, self.depth, self.index_kind, self.index_params,
                    self.sample, self.refresh_at_start, self.query_max_length, self.doc_max_length, self.seed,
                    [getattr(f, "name", repr(f)) for f in self.filters]]
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return f"ANCERefresh-{h.hexdigest()}"

    def __repr__(self) -> str:
        return (f"ANCERefresh(every_n_steps={self.every_n_steps}, n_negatives={self.n_negatives}, "
                f"depth={self.depth}, index={self.index_kind!r}, filters={[getattr(f, 'name', f) for f in self.filters]})")

    # ---- callback hooks
    def on_train_begin(self, state) -> None:
        dataset = state.dataset
        if not hasattr(dataset, "set_negatives") or not hasattr(dataset, "anchors"):
            raise TypeError("ANCERefresh needs a TripletDataset (anchors, positives, negatives with set_negatives)")
        k = getattr(dataset, "k", 1)
        if k != self.n_negatives:
            raise ValueError(f"the dataset has {k} negative(s) per row but ANCERefresh was given n_negatives="
                             f"{self.n_negatives}")
        self._row_qids = self._map_rows(dataset.anchors)
        _check_depth(self.depth, len(self.doc_ids), {q: self.positives[q] for q in set(self._row_qids)})
        self.last_refresh_step = 0
        self.refreshes = []
        if self.refresh_at_start:
            self.refresh(state, step=1)

    def on_step_begin(self, state) -> None:
        if self._row_qids is None:  # called without on_train_begin (e.g. a hand-made loop)
            self.on_train_begin(state)
        step = state.step
        if step > 1 and (step - 1) % self.every_n_steps == 0 and self.last_refresh_step != step:
            self.refresh(state, step=step)
        state.history.log(step, index_age=step - max(self.last_refresh_step, 1))

    # ---- the work
    def _map_rows(self, anchors: Sequence[str]) -> list[str]:
        if self.queries is None:
            qids = list(anchors)
        else:
            by_text: dict[str, str] = {}
            for q, text in self.queries.items():
                by_text.setdefault(text, q)
            unknown = [a for a in anchors if a not in by_text]
            if unknown:
                raise ValueError(f"{len(unknown)} dataset anchor(s) are not texts of `queries`, e.g. {unknown[:2]}")
            qids = [by_text[a] for a in anchors]
        missing = sorted({q for q in qids if not self.positives.get(q)})
        if missing:
            raise ValueError(f"{len(missing)} training queries have no positive in `positives`, e.g. {missing[:3]}"
                             + ("" if self.queries is not None else " (without `queries`, positives must be keyed "
                                                                   "by the anchor texts)"))
        return qids

    def refresh(self, state, step: int) -> dict:
        """Re-encode, re-index, re-mine and replace the negatives of every row; returns the log record."""
        start = time.perf_counter()
        model, dataset = state.model, state.dataset
        qids = list(dict.fromkeys(self._row_qids))
        query_text = {q: (self.queries[q] if self.queries is not None else q) for q in qids}
        encode = dict(batch_size=self.batch_size, cache=False, progress=False)
        doc_vectors = model.encode(self.corpus_texts, max_length=self.doc_max_length, desc="corpus", **encode)
        query_vectors = model.encode([query_text[q] for q in qids], max_length=self.query_max_length, **encode)
        encode_seconds = time.perf_counter() - start
        index = build_index(self.index_kind, doc_vectors, **self.index_params)
        mined = mine_dense(qids, self.doc_ids, {q: self.positives[q] for q in qids}, depth=self.depth,
                           query_vectors=query_vectors, doc_vectors=doc_vectors, index=index)
        kept, report = apply_filters(mined, self.filters)

        rows, new, topped_up, changed = list(range(len(dataset))), [], 0, 0
        for i in rows:
            q = self._row_qids[i]
            cands = [c.doc_id for c in kept.candidates[q]]
            if self.sample == "random" and len(cands) > self.n_negatives:
                pick = _rng(self.seed, step, i).choice(len(cands), self.n_negatives, replace=False)
                cands = [cands[j] for j in sorted(pick)]
            chosen = cands[:self.n_negatives]
            if len(chosen) < self.n_negatives:
                topped_up += 1
                excluded = {self.row[d] for d in self.positives[q]} | {self.row[d] for d in chosen}
                extra = _draw_excluding(_rng(self.seed, step, i, "top-up"), len(self.doc_ids),
                                        self.n_negatives - len(chosen), excluded)
                chosen += [self.doc_ids[j] for j in extra]
            texts = [self.corpus_texts[self.row[d]] for d in chosen]
            changed += texts != list(dataset[i][2:])
            new.append(texts if getattr(dataset, "stack_negatives", self.n_negatives > 1) else texts[0])
        dataset.set_negatives(rows, new)

        seconds = time.perf_counter() - start
        record = {"refresh_seconds": round(seconds, 3), "refresh_encode_seconds": round(encode_seconds, 3),
                  "negatives_changed": changed / max(len(rows), 1), "filtered": report.before - report.after,
                  "rows_topped_up": topped_up}
        state.history.log(step, **record)
        self.refreshes.append({"step": step, **record})
        self.last_refresh_step = step
        return record
