"""Recipes that Part 5's notebooks share: training pairs without labels against labelled pairs (section 5.2).

A retrieval collection with no judged queries still has structure to learn from. Two kinds of pairs are made
from the corpus alone (:mod:`embedlessons.unlabelled_pairs`):

- **title -> abstract**: the title as the query, the abstract as its positive;
- **inverse cloze** (Lee, Chang & Toutanova 2019): one sentence as the query, the rest of its passage as the
  positive (the sentence removed from it nine times in ten).

:func:`pair_source_comparison` fine-tunes MiniLM's top layers on each source at one step budget, with the same
loss (in-batch InfoNCE), optimiser and seeds as the labelled run on SciFact's training claims, and scores every
model on the same SciFact test claims with per-claim NDCG@10 (a recorded experiment: the book's numbers come
from ``embedlessons/results/unlabelled_vs_labelled.json``). :func:`compare_sources` gives the paired difference
of two sources with its interval.

    >>> from embedlessons.experiments.part5 import train_on_pairs
    >>> model, history = train_on_pairs("inverse_cloze", seed=0, steps=60)      # doctest: +SKIP
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from ..data import load_retrieval
from ..evaluation import mrr_at_k, ndcg_at_k, recall_at_k
from ..retrieval import dense_run
from .part3 import TrainTopLayers, evaluation_subset, paired_test, training_pool, training_rows

__all__ = ["PAIR_SOURCES", "UNLABELLED_EXPERIMENT", "pair_tasks", "train_on_pairs", "pair_source_comparison",
           "merge_source_results", "compare_sources", "source_means", "start_model", "STAGES", "START_SETTINGS",
           "THREE_STAGE_EXPERIMENT", "stage_tasks", "run_stage", "three_stage_comparison", "merge_three_stage_results"]

#: Source name -> the training tasks it draws from ("base": MiniLM as shipped, no training).
PAIR_SOURCES: dict[str, tuple[str, ...]] = {
    "base": (),
    "labelled": ("labelled",),
    "title_abstract": ("title_abstract",),
    "inverse_cloze": ("inverse_cloze",),
    "title_abstract+inverse_cloze": ("title_abstract", "inverse_cloze"),
}
#: Name of the recorded comparison (``embedlessons/results/<name>.json``, :mod:`embedlessons.recorded`).
UNLABELLED_EXPERIMENT = "unlabelled_vs_labelled"


def pair_tasks(source: str, temperature: float = 0.05, max_rows: int | None = None, seed: int = 0) -> list:
    """The :class:`~embedlessons.multitask.Task` list of one source of :data:`PAIR_SOURCES`.

    - ``labelled``: (SciFact training claim, relevant abstract), claims that repeat a test claim left out;
    - ``title_abstract`` / ``inverse_cloze``: pairs made from SciFact's whole corpus of 5,183 abstracts, text
      only (no query, no judgement). The corpus includes the abstracts the test claims cite: a collection's
      documents are known before any query arrives, and learning from them is what adapting to a collection
      means; the test claims themselves are never seen.

    ``max_rows`` caps each task (a seeded sample), for tests.
    """
    from ..losses import in_batch_info_nce
    from ..multitask import Task
    from ..training import PairDataset
    from ..unlabelled_pairs import inverse_cloze_pairs, title_abstract_pairs
    from .part4 import training_tasks

    if source not in PAIR_SOURCES:
        raise ValueError(f"unknown pair source {source!r}; choose one of {list(PAIR_SOURCES)}")
    loss = functools.partial(in_batch_info_nce, temperature=temperature)
    corpus = None
    tasks = []
    for name in PAIR_SOURCES[source]:
        if name == "labelled":          # Part 4's retrieval task: the same pairs, claims that repeat a test one left out
            retrieval, = training_tasks(("retrieval",), rows_per_task=max_rows, temperature=temperature, seed=seed)
            data = retrieval.dataset
        else:
            corpus = corpus or load_retrieval("scifact", "test")     # the corpus is the same for every split
            data = title_abstract_pairs(corpus) if name == "title_abstract" else inverse_cloze_pairs(corpus, seed=0)
        if max_rows is not None and max_rows < len(data.anchors):
            keep = np.sort(np.random.default_rng(seed).choice(len(data.anchors), max_rows, replace=False))
            data = PairDataset([data.anchors[i] for i in keep], [data.positives[i] for i in keep])
        tasks.append(Task(name, data, loss))
    return tasks


def train_on_pairs(source: str, seed: int = 0, steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
                   max_length: int = 64, top_layers: int | None = 3, max_rows: int | None = None,
                   model="all-MiniLM-L6-v2", cache: bool = True, progress: bool = False):
    """Fine-tune MiniLM on one pair source: ``steps`` batches of ``batch_size`` pairs, in-batch InfoNCE
    (temperature 0.05), AdamW at ``lr`` with 10% warm-up then linear decay, the top ``top_layers`` layers
    trained, texts cut at ``max_length`` tokens; two tasks share the steps evenly (uniform sampler).
    Returns ``(model, history)``; ``"base"`` returns the untouched model and None."""
    from ..models import load_model
    from ..multitask import train_multitask
    from ..training import TrainConfig

    tasks = pair_tasks(source, max_rows=max_rows)
    if isinstance(model, str):
        model = load_model(model)
    if not tasks:
        return model, None
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1, max_length=max_length,
                         seed=seed)
    history = train_multitask(model, tasks, config, sampler="uniform",
                              callbacks=[TrainTopLayers(top_layers)] if top_layers else [], cache=cache,
                              progress=progress)
    return model, history


def start_model(start: str = "all-MiniLM-L6-v2"):
    """The model a comparison starts from: ``"all-MiniLM-L6-v2"`` (trained by its authors on about a billion
    pairs), or ``"small_bert"`` (:func:`~embedlessons.models.small_bert`, random weights, seed 0: a model that
    has seen no pairs at all)."""
    from ..models import load_model, small_bert

    if start == "small_bert":
        return small_bert(seed=0)
    if start != "all-MiniLM-L6-v2":
        raise ValueError(f"unknown start {start!r}; choose 'all-MiniLM-L6-v2' or 'small_bert'")
    return load_model(start)


def pair_source_comparison(sources: Sequence[str] = tuple(PAIR_SOURCES), seeds: Sequence[int] = (0, 1, 2),
                           steps: int = 60, batch_size: int = 32, lr: float = 5e-5, max_length: int = 64,
                           query_max_length: int = 64, doc_max_length: int = 128, top_layers: int | None = 3,
                           max_rows: int | None = None, scifact_distractors: int | None = 217,
                           start: str = "all-MiniLM-L6-v2", progress: bool = True) -> dict:
    """Train on every source with every seed; score each model on SciFact test (a recorded experiment).

    Every run starts from :func:`start_model` (``start``), so "base" is that model untrained.

    Returns a JSON-ready dict: ``settings``; ``summary[source][str(seed)]`` with NDCG@10, MRR@10, Recall@100;
    ``per_query["<source>/seed<s>"]`` (claim id -> NDCG@10); ``pairs`` (pairs each task offers) and
    ``examples`` (the first pair of each task); ``data`` (claims and abstracts scored).
    """
    settings = dict(sources=list(sources), seeds=list(seeds), steps=steps, batch_size=batch_size, lr=lr,
                    max_length=max_length, query_max_length=query_max_length, doc_max_length=doc_max_length,
                    top_layers=top_layers, max_rows=max_rows, scifact_distractors=scifact_distractors)
    if start != "all-MiniLM-L6-v2":
        settings["start"] = start
    test = evaluation_subset(scifact_distractors)
    out = {"settings": settings, "summary": {}, "per_query": {}, "pairs": {}, "examples": {},
           "data": {"claims": len(test.queries), "abstracts": len(test.corpus)}}
    for source in sources:
        for task in pair_tasks(source, max_rows=max_rows):
            out["pairs"][task.name] = len(task.dataset.anchors)
            out["examples"][task.name] = [task.dataset.anchors[0], task.dataset.positives[0]]
        for seed in seeds[:1] if source == "base" else seeds:
            model, _ = train_on_pairs(source, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                                      max_length=max_length, top_layers=top_layers, max_rows=max_rows,
                                      model=start_model(start), progress=progress)
            enc = functools.partial(model.encode, progress=False)
            run = dense_run(enc(list(test.queries.values()), max_length=query_max_length),
                            enc(test.doc_texts(), max_length=doc_max_length), test, top_k=100)
            per_claim = ndcg_at_k(test.qrels, run, k=10, per_query=True)
            out["summary"].setdefault(source, {})[str(seed)] = {
                "ndcg@10": float(np.mean(list(per_claim.values()))), "mrr@10": mrr_at_k(test.qrels, run, k=10),
                "recall@100": recall_at_k(test.qrels, run, k=100)}
            out["per_query"][f"{source}/seed{seed}"] = {q: float(v) for q, v in per_claim.items()}
            if progress:
                print(source, seed, {k: round(v, 4) for k, v in out["summary"][source][str(seed)].items()},
                      flush=True)
    return out


def merge_source_results(results: Sequence[dict]) -> dict:
    """Merge results of :func:`pair_source_comparison` run with other sources (``--append``); the other settings
    must match, and no source may occur twice."""
    first = results[0]
    fixed = {k: v for k, v in first["settings"].items() if k != "sources"}
    merged = {"settings": dict(first["settings"], sources=[]), "summary": {}, "per_query": {}, "pairs": {},
              "examples": {}, "data": first["data"], "runs": []}
    for r in results:
        other = {k: v for k, v in r["settings"].items() if k != "sources"}
        if other != fixed:
            raise ValueError(f"cannot merge runs with different settings: {fixed} vs {other}")
        twice = set(r["summary"]) & set(merged["summary"])
        if twice:
            raise ValueError(f"sources {sorted(twice)} occur in more than one run")
        merged["settings"]["sources"] += list(r["settings"]["sources"])
        for key in ("summary", "per_query", "pairs", "examples"):
            merged[key].update(r[key])
        merged["runs"] += list(r.get("runs", []))
    return merged


def source_means(result: Mapping, metric: str = "ndcg@10") -> dict[str, tuple[float, float]]:
    """source -> (mean over seeds, standard deviation over seeds; 0 for one seed) of ``metric``."""
    out = {}
    for source, by_seed in result["summary"].items():
        v = np.array([s[metric] for s in by_seed.values()])
        out[source] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return out


def compare_sources(result: Mapping, a: str, b: str, n_resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Paired difference of NDCG@10, source ``a`` minus source ``b``, over the test claims, each claim's score
    averaged over the seeds first: :func:`~.part3.paired_test` (``diff``, ``ci_low``, ``ci_high``, ``p``)."""
    for s in (a, b):
        if s not in result["summary"]:
            raise ValueError(f"source {s!r} is not in this result; it has {list(result['summary'])}")

    def mean_items(source: str) -> dict[str, float]:
        by_seed = [result["per_query"][f"{source}/seed{s}"] for s in result["summary"][source]]
        return {q: float(np.mean([items[q] for items in by_seed])) for q in by_seed[0]}

    return paired_test(mean_items(a), mean_items(b), n_resamples, seed)


# ================================================================================= three-stage training (5.3)
#: The three stages, in order: what each trains on (section 5.3).
STAGES = {"warm-up": "title -> abstract and inverse-cloze pairs from SciFact's corpus (no labels, section 5.2)",
          "multi-task": "SciFact claims, STS-B, SNLI and AG News, one task per batch (Part 4)",
          "hard negatives": "SciFact claims with each claim's best BM25 non-relevant abstract (Part 3)"}
#: Training settings per starting point: MiniLM's top layers gently; the small BERT from scratch, every layer.
START_SETTINGS = {"all-MiniLM-L6-v2": {"steps": 60, "lr": 5e-5, "top_layers": 3},
                  "small_bert": {"steps": 300, "lr": 1e-3, "top_layers": None}}
THREE_STAGE_EXPERIMENT = "three_stage_training"


def stage_tasks(stage: str, dim: int = 384, temperature: float = 0.05, max_rows: int | None = None) -> list:
    """The :class:`~embedlessons.multitask.Task` list of one stage of :data:`STAGES` (``dim``: the model's width,
    for the label prototypes of the multi-task stage; ``max_rows`` caps each task, for tests)."""
    from ..losses import in_batch_info_nce
    from ..multitask import Task
    from .part3 import build_triplets, mine_negatives, row_negatives
    from .part4 import training_tasks

    if stage == "warm-up":
        return pair_tasks("title_abstract+inverse_cloze", temperature=temperature, max_rows=max_rows)
    if stage == "multi-task":
        return training_tasks(rows_per_task=max_rows, dim=dim, temperature=temperature)
    if stage == "hard negatives":
        pool = training_pool(1000, seed=0)
        rows = training_rows(pool, max_rows=max_rows)
        mined, _ = mine_negatives("bm25", pool, depth=30)
        triplets = build_triplets(pool, rows, row_negatives(mined, pool, rows, hard_ratio=1.0))
        return [Task("hard_negatives", triplets, functools.partial(in_batch_info_nce, temperature=temperature))]
    raise ValueError(f"unknown stage {stage!r}; choose one of {list(STAGES)}")


def run_stage(model, stage: str, seed: int = 0, steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
              max_length: int = 64, top_layers: int | None = 3, max_rows: int | None = None, progress: bool = False):
    """Train ``model`` in place for one stage (a fresh AdamW, 10% warm-up then linear decay, as every run of
    the book); tasks of a stage share its steps by temperature sampling (T = 2, Part 4). Returns the history."""
    from ..multitask import train_multitask
    from ..training import TrainConfig

    tasks = stage_tasks(stage, dim=model.dim, max_rows=max_rows)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1, max_length=max_length,
                         seed=seed)
    return train_multitask(model, tasks, config, sampler="temperature", temperature=2.0,
                           callbacks=[TrainTopLayers(top_layers)] if top_layers else [], cache=False,
                           progress=progress)


def three_stage_comparison(starts: Sequence[str] = tuple(START_SETTINGS), seeds: Sequence[int] = (0, 1, 2),
                           batch_size: int = 32, max_length: int = 64, max_rows: int | None = None,
                           steps: int | None = None, scifact_distractors: int | None = 217,
                           sts_pairs: int | None = None, news_train: int = 400, news_test: int = 1000,
                           score_start: bool = True, progress: bool = True) -> dict:
    """Warm-up, then multi-task, then hard negatives, from each start; all four families scored after each stage.

    Returns a result in the layout of :func:`~.part4.recipe_comparison`, so that
    :func:`~.part4.compare_recipes` and :func:`~.part4.recipe_means` apply: one "recipe" per start and number
    of stages done, ``"<start>:<k>"`` (``k = 0``: untrained, one model), with ``summary``, ``per_query``
    (``"<start>:<k>/seed<s>/<family>"``) and ``sts_gold``; ``settings["start_settings"]`` holds the steps,
    learning rate and trained layers of each start (``steps`` overrides every start's, for tests).
    ``score_start=False`` skips scoring the untrained start: for runs split by seed and merged
    (:func:`merge_three_stage_results`), one of which scores it.
    """
    from .part4 import four_task_data, score_four_tasks

    unknown = [s for s in starts if s not in START_SETTINGS]
    if unknown:
        raise ValueError(f"unknown starts {unknown}; choose from {list(START_SETTINGS)}")
    per_start = {s: {**START_SETTINGS[s], **({"steps": steps} if steps is not None else {})} for s in starts}
    settings = dict(starts=list(starts), seeds=list(seeds), score_start=score_start, batch_size=batch_size,
                    max_length=max_length,
                    max_rows=max_rows, steps=steps, start_settings=per_start, stages=list(STAGES),
                    scifact_distractors=scifact_distractors, sts_pairs=sts_pairs, news_train=news_train,
                    news_test=news_test)
    data = four_task_data(scifact_distractors, sts_pairs, news_train, news_test)
    out = {"settings": settings, "summary": {}, "per_query": {}, "sts_gold": [float(s) for s in data.sts.scores],
           "data": data.sizes()}

    def record(recipe: str, seed: int, model) -> None:
        scores = score_four_tasks(model, data, max_length=max_length)
        out["summary"].setdefault(recipe, {})[str(seed)] = scores["summary"]
        for family, items in scores["items"].items():
            out["per_query"][f"{recipe}/seed{seed}/{family}"] = items
        if progress:
            print(recipe, seed, {k: round(v, 4) for k, v in scores["summary"].items()}, flush=True)

    for start in starts:
        if score_start:
            record(f"{start}:0", 0, start_model(start))
        for seed in seeds:
            model = start_model(start)
            for k, stage in enumerate(STAGES, 1):
                run_stage(model, stage, seed=seed, batch_size=batch_size, max_length=max_length, max_rows=max_rows,
                          **per_start[start])
                record(f"{start}:{k}", seed, model)
    return out


def merge_three_stage_results(results: Sequence[dict]) -> dict:
    """Merge results of :func:`three_stage_comparison` run for other starts or other seeds (``--append``); the
    other settings and the scored data must match, and no (start, stage, seed) may occur twice."""
    first = results[0]
    split = ("starts", "start_settings", "seeds", "score_start")
    fixed = lambda r: ({k: v for k, v in r["settings"].items() if k not in split}, r["sts_gold"])
    merged = {**first, "summary": {}, "per_query": {}, "runs": [],
              "settings": {**first["settings"], "starts": [], "start_settings": {}, "seeds": [], "score_start": True}}
    for r in results:
        if fixed(r) != fixed(first):
            raise ValueError(f"cannot merge runs with different settings: {first['settings']} vs {r['settings']}")
        for recipe, by_seed in r["summary"].items():
            twice = set(by_seed) & set(merged["summary"].get(recipe, {}))
            if twice:
                raise ValueError(f"{recipe} seeds {sorted(twice)} occur in more than one run")
            merged["summary"].setdefault(recipe, {}).update(by_seed)
        merged["per_query"].update(r["per_query"])
        settings = merged["settings"]
        settings["starts"] += [x for x in r["settings"]["starts"] if x not in settings["starts"]]
        settings["start_settings"].update(r["settings"]["start_settings"])
        settings["seeds"] = sorted(set(settings["seeds"]) | set(r["settings"]["seeds"]))
        merged["runs"] += list(r.get("runs", []))
    return merged
