"""Recipes that Part 4's notebooks share: the training tasks, the four task families a model is scored on,
and the recorded comparison of training recipes (retrieval only, multi-task, task samplers, task weights).

The four families, each scored as MTEB scores it (Muennighoff et al. 2023):

- **retrieval**: SciFact test claims, NDCG@10 over the relevant abstracts plus sampled distractors;
- **STS**: STS-B test, Spearman correlation of cosine with the human scores;
- **classification**: AG News, accuracy of a logistic regression on frozen embeddings
  (:func:`~embedlessons.evaluators.logistic_regression_accuracy`);
- **clustering**: AG News, V-measure of k-means on embeddings (:func:`~embedlessons.evaluators.kmeans_v_measure`).

Every recipe fine-tunes MiniLM's top layers from the same start at an equal step budget, and stores per-item
scores (per claim, per STS pair, per news item, per k-means run) so that any two recipes can be compared with
a paired test (:func:`compare_recipes`).

    >>> from embedlessons.experiments.part4 import train_recipe, four_task_data, score_four_tasks
    >>> model, history = train_recipe("multitask", seed=0, steps=60)            # doctest: +SKIP
    >>> score_four_tasks(model, four_task_data())["summary"]                    # doctest: +SKIP
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data import LabelledTexts, RetrievalDataset, ScoredPairs, load_classification, load_sts, load_triplets
from ..evaluation import ndcg_at_k, spearman
from ..evaluators import kmeans_v_measure, logistic_regression_accuracy
from ..retrieval import dense_run
from .part3 import TrainTopLayers, evaluation_subset, paired_test, training_pool, training_rows

__all__ = ["FAMILIES", "METRICS", "RECIPES", "TASK_NAMES", "FourTaskData", "four_task_data", "training_tasks",
           "train_recipe", "score_four_tasks", "recipe_comparison", "merge_recipe_results", "compare_recipes",
           "recipe_means", "FOUR_TASK_EXPERIMENT", "WINDOWS", "LOSS_VARIANTS", "MRL_EXPERIMENT", "mrl_dimension_curve",
           "compare_mrl"]

#: The four families and the name of the metric reported for each.
FAMILIES = ("retrieval", "sts", "classification", "clustering")
METRICS = {"retrieval": "SciFact NDCG@10", "sts": "STS-B Spearman", "classification": "AG News accuracy",
           "clustering": "AG News V-measure"}
#: Training tasks of the multi-task recipes, one per data shape.
TASK_NAMES = ("retrieval", "sts", "nli", "news")
#: The loss of each task, and the alternatives section 4.2 compares (task -> variant names, default first).
LOSS_VARIANTS = {"retrieval": ("info_nce",), "sts": ("cosent", "mse"), "nli": ("info_nce",),
                 "news": ("prototypes", "supcon", "center")}
#: Recipe name -> (tasks, sampler, weighting[, {task: loss variant}]). "base" is MiniLM without fine-tuning.
RECIPES: dict[str, tuple] = {
    "base": ((), "", ""),
    "retrieval": (("retrieval",), "uniform", "fixed"),
    # one task each, with each loss variant (section 4.2)
    "sts_cosent": (("sts",), "uniform", "fixed"),
    "sts_mse": (("sts",), "uniform", "fixed", {"sts": "mse"}),
    "nli": (("nli",), "uniform", "fixed"),
    "news_prototypes": (("news",), "uniform", "fixed"),
    "news_supcon": (("news",), "uniform", "fixed", {"news": "supcon"}),
    "news_center": (("news",), "uniform", "fixed", {"news": "center"}),
    "multitask": (TASK_NAMES, "temperature", "fixed"),          # the reference multi-task recipe
    "uniform": (TASK_NAMES, "uniform", "fixed"),
    "proportional": (TASK_NAMES, "proportional", "fixed"),
    "round_robin": (TASK_NAMES, "round_robin", "fixed"),
    "loss_ratio": (TASK_NAMES, "temperature", "loss_ratio"),
    "dwa": (TASK_NAMES, "temperature", "dwa"),
    "uncertainty": (TASK_NAMES, "temperature", "uncertainty"),
}
#: Loss windows of the adaptive weightings: LossRatioWeighting's per-task window (observations of that task),
#: DynamicWeightAverage's period (steps of all tasks).
WINDOWS = {"loss_ratio": 5, "dwa": 10}
#: Name of the recorded comparison (``embedlessons/results/<name>.json``, :mod:`embedlessons.recorded`).
FOUR_TASK_EXPERIMENT = "multitask_four_tasks"


# ============================================================================================ evaluation data
@dataclass(frozen=True)
class FourTaskData:
    """What a model is scored on: a SciFact test subset, STS-B test pairs, AG News samples."""

    scifact: RetrievalDataset
    sts: ScoredPairs
    news_train: LabelledTexts           # the logistic regression's training pool
    news_test: LabelledTexts            # classified, and clustered

    def sizes(self) -> dict[str, int]:
        return {"scifact_claims": len(self.scifact.queries), "scifact_abstracts": len(self.scifact.doc_ids),
                "sts_pairs": len(self.sts.scores), "news_train": len(self.news_train.texts),
                "news_test": len(self.news_test.texts)}


def _sample(data: LabelledTexts, n: int | None, seed: int) -> LabelledTexts:
    if n is None or n >= len(data.texts):
        return data
    if n < 1:
        raise ValueError(f"a sample needs n >= 1, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(data.texts), n, replace=False))
    return LabelledTexts(data.name, data.split, [data.texts[i] for i in idx], np.asarray(data.labels)[idx],
                         list(data.label_names))


def four_task_data(scifact_distractors: int = 217, sts_pairs: int | None = None, news_train: int = 400,
                   news_test: int = 1000, seed: int = 0) -> FourTaskData:
    """The evaluation sets (test splits only; training uses the train splits).

    Args:
        scifact_distractors: abstracts added to the relevant ones (:func:`~.part3.evaluation_subset`; None: the
            full corpus).
        sts_pairs: first n STS-B test pairs (None: all 1,379).
        news_train, news_test: AG News items sampled (seeded) from its train split (the classifier's pool) and
            test split (classified and clustered).
    """
    sts = load_sts("stsb", "test")
    if sts_pairs is not None:
        sts = ScoredPairs(sts.name, sts.split, sts.sentences1[:sts_pairs], sts.sentences2[:sts_pairs],
                          np.asarray(sts.scores)[:sts_pairs])
    return FourTaskData(evaluation_subset(scifact_distractors, seed=seed), sts,
                        _sample(load_classification("ag_news", "train"), news_train, seed),
                        _sample(load_classification("ag_news", "test"), news_test, seed))


def score_four_tasks(model, data: FourTaskData, max_length: int = 64, doc_max_length: int = 128,
                     kmeans_runs: int = 5, seed: int = 0) -> dict:
    """Score ``model`` on the four families, with the per-item scores that paired tests need.

    Returns:
        ``{"summary": {family: score}, "items": {family: {item id: score}}}``: retrieval items are claims
        (NDCG@10), STS items are pairs (the cosine; the Spearman needs all of them), classification items are
        news items (share of the logistic-regression experiments that got it right), clustering items are
        k-means runs (V-measure).
    """
    enc = functools.partial(model.encode, progress=False)
    ds = data.scifact
    run = dense_run(enc(list(ds.queries.values()), max_length=max_length),
                    enc(ds.doc_texts(), max_length=doc_max_length), ds, top_k=100)
    ndcg = ndcg_at_k(ds.qrels, run, k=10, per_query=True)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    cosines = (unit(enc(data.sts.sentences1, max_length=max_length))
               * unit(enc(data.sts.sentences2, max_length=max_length))).sum(axis=1)

    train_x = enc(data.news_train.texts, max_length=max_length)
    test_x = enc(data.news_test.texts, max_length=max_length)
    cls = logistic_regression_accuracy(train_x, data.news_train.labels, test_x, data.news_test.labels, seed=seed)
    clu = kmeans_v_measure(test_x, data.news_test.labels, n_runs=kmeans_runs, seed=seed)
    return {"summary": {"retrieval": float(np.mean(list(ndcg.values()))),
                        "sts": spearman(cosines, data.sts.scores),
                        "classification": cls["accuracy"], "clustering": clu["v_measure"]},
            "items": {"retrieval": {q: float(v) for q, v in ndcg.items()},
                      "sts": {str(i): float(c) for i, c in enumerate(cosines)},
                      "classification": {str(i): float(c) for i, c in enumerate(cls["correct"])},
                      "clustering": {f"kmeans{r}": float(v) for r, v in enumerate(clu["runs"])}}}


# ============================================================================================ training tasks
def training_tasks(names: Sequence[str] = TASK_NAMES, rows_per_task: int | None = None, dim: int = 384,
                   temperature: float = 0.05, seed: int = 0, losses: Mapping[str, str] | None = None) -> list:
    """One :class:`~embedlessons.multitask.Task` per data shape, on the train splits (none overlaps the tests).

    - ``retrieval``: (SciFact training claim, relevant abstract) pairs, claims that repeat a test claim left
      out (section 2.5); in-batch InfoNCE (:func:`~embedlessons.losses.in_batch_info_nce`).
    - ``sts``: STS-B train pairs with their scores; CoSENT (:func:`~embedlessons.losses.cosent_loss`).
    - ``nli``: SNLI (premise, entailed hypothesis, contradicting hypothesis) triplets; in-batch InfoNCE with
      the contradiction as an extra negative.
    - ``news``: AG News train items with their topic; learnable label prototypes
      (:class:`~embedlessons.task_losses.PrototypeLoss`, ``dim`` wide).

    ``rows_per_task`` caps each dataset (a seeded sample; None: all rows). ``losses`` swaps a task's loss for
    one of :data:`LOSS_VARIANTS`: ``sts``: ``"mse"`` (:func:`~embedlessons.losses.mse_cosine_loss` on the 0-1
    scores); ``news``: ``"supcon"`` (:func:`~embedlessons.losses.supervised_contrastive`, in-batch positives of
    the same label) or ``"center"`` (:class:`~embedlessons.task_losses.CenterLoss`: prototypes plus the centre
    term).
    """
    from ..losses import cosent_loss, in_batch_info_nce, mse_cosine_loss
    from ..multitask import Task, labelled_texts
    from ..task_losses import CenterLoss, PrototypeLoss
    from ..training import PairDataset, ScoredPairDataset, TripletDataset, scored_pairs_from_sts, triplets_from_nli

    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown task names {unknown}; choose from {list(TASK_NAMES)}")
    info_nce = functools.partial(in_batch_info_nce, temperature=temperature)
    losses = dict(losses or {})
    for task, variant in losses.items():
        if task not in LOSS_VARIANTS or variant not in LOSS_VARIANTS[task]:
            raise ValueError(f"unknown loss {variant!r} for task {task!r}; choose from {LOSS_VARIANTS}")

    def cap(n: int) -> np.ndarray:
        idx = np.arange(n)
        if rows_per_task is not None and rows_per_task < n:
            idx = np.sort(np.random.default_rng(seed).choice(n, rows_per_task, replace=False))
        return idx

    tasks = []
    for name in names:
        if name == "retrieval":
            pool = training_pool(1000, seed=0)
            rows = training_rows(pool)
            text = dict(zip(pool.doc_ids, pool.doc_texts()))
            idx = cap(len(rows))
            data = PairDataset([pool.queries[rows[i][0]] for i in idx], [text[rows[i][1]] for i in idx])
            tasks.append(Task("retrieval", data, info_nce))
        elif name == "sts":
            full = scored_pairs_from_sts(load_sts("stsb", "train"))
            idx = cap(len(full))
            items = [full[i] for i in idx]
            data = ScoredPairDataset([x[0] for x in items], [x[1] for x in items], [x[2] for x in items])
            loss = mse_cosine_loss if losses.get("sts") == "mse" else functools.partial(cosent_loss, scale=20.0)
            tasks.append(Task("sts", data, loss))
        elif name == "nli":
            full = triplets_from_nli(load_triplets("snli"))
            idx = cap(len(full))
            items = [full[i] for i in idx]
            data = TripletDataset([x[0] for x in items], [x[1] for x in items], [x[2] for x in items])
            tasks.append(Task("nli", data, info_nce))
        else:
            news = load_classification("ag_news", "train")
            data = labelled_texts(news, None if rows_per_task is None else min(rows_per_task, len(news)), seed)
            n_classes = len(news.label_names)
            loss = {"prototypes": lambda: PrototypeLoss(n_classes, dim, temperature=temperature),
                    "supcon": lambda: functools.partial(_supcon, temperature=temperature),
                    "center": lambda: CenterLoss(n_classes, dim, temperature=temperature)}[losses.get("news",
                                                                                                "prototypes")]()
            tasks.append(Task("news", data, loss, no_duplicates=False))
    return tasks


def _supcon(embeddings, labels, temperature: float):
    """Supervised contrastive loss; a batch where every label occurs once (possible only for tiny batches)
    has no positive pair and contributes a zero loss instead of an error."""
    from ..losses import supervised_contrastive

    if len(set(labels.tolist())) == len(labels):
        return (embeddings * 0).sum()
    return supervised_contrastive(embeddings, labels, temperature)


def _weighting(name: str):
    from ..multitask import DynamicWeightAverage, FixedWeights, LossRatioWeighting, UncertaintyWeighting

    # windows sized for runs of tens of steps over four tasks (each task is drawn every few steps)
    options = {"fixed": FixedWeights, "loss_ratio": lambda: LossRatioWeighting(alpha=1.0, window=WINDOWS["loss_ratio"]),
               "dwa": lambda: DynamicWeightAverage(temperature=2.0, window=WINDOWS["dwa"]),
               "uncertainty": lambda: UncertaintyWeighting(lr_scale=100.0)}
    if name not in options:
        raise ValueError(f"unknown weighting {name!r}; choose one of {sorted(options)}")
    return options[name]()


def train_recipe(recipe: str, seed: int = 0, steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
                 max_length: int = 64, top_layers: int | None = 3, sampler_temperature: float = 2.0,
                 rows_per_task: int | None = None, model="all-MiniLM-L6-v2", cache: bool = True,
                 progress: bool = False):
    """Fine-tune MiniLM with one recipe of :data:`RECIPES` at a fixed step budget.

    Every recipe starts from the same weights, trains the top ``top_layers`` layers (:class:`~.part3.TrainTopLayers`;
    None: all) for ``steps`` batches of ``batch_size`` rows with AdamW at ``lr`` (10% warm-up, then linear
    decay), texts cut at ``max_length`` tokens. Multi-task recipes draw one task per batch with their sampler
    (``sampler_temperature`` for the temperature sampler) and combine losses with their weighting.
    Returns ``(model, history)``; ``("base", ...)`` returns the untouched model and None.
    """
    from ..models import load_model
    from ..multitask import train_multitask
    from ..training import TrainConfig

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {list(RECIPES)}")
    if isinstance(model, str):
        model = load_model(model)
    names, sampler, weighting, *variant = RECIPES[recipe]
    if not names:
        return model, None
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1, max_length=max_length,
                         seed=seed)
    callbacks = [TrainTopLayers(top_layers)] if top_layers else []
    tasks = training_tasks(names, rows_per_task, dim=model.dim, seed=0, losses=variant[0] if variant else None)
    history = train_multitask(model, tasks, config,
                              sampler=sampler, temperature=sampler_temperature, weighting=_weighting(weighting),
                              callbacks=callbacks, cache=cache, progress=progress)
    return model, history


# ======================================================================================= recorded comparison
def recipe_comparison(recipes: Sequence[str] = ("base", "retrieval", "multitask"), seeds: Sequence[int] = (0, 1, 2),
                      steps: int = 60, batch_size: int = 32, lr: float = 5e-5, max_length: int = 64,
                      top_layers: int | None = 3, rows_per_task: int | None = None,
                      scifact_distractors: int | None = 217, sts_pairs: int | None = None, news_train: int = 400,
                      news_test: int = 1000, progress: bool = True) -> dict:
    """Train every recipe with every seed and score each model on the four families (a recorded experiment).

    Returns a JSON-ready dict: ``settings``; ``summary[recipe][str(seed)][family]``; ``per_query`` with one
    entry ``"<recipe>/seed<s>/<family>"`` per model and family (item id -> score, see
    :func:`score_four_tasks`); ``sts_gold`` (the STS-B scores of the pairs, for Spearman); ``task_mix`` and
    ``weights`` (realised share of steps and last task weights of each multi-task run); ``data`` (set sizes).
    """
    from ..models import load_model

    settings = dict(recipes=list(recipes), seeds=list(seeds), steps=steps, batch_size=batch_size, lr=lr,
                    max_length=max_length, top_layers=top_layers, rows_per_task=rows_per_task,
                    scifact_distractors=scifact_distractors, sts_pairs=sts_pairs, news_train=news_train,
                    news_test=news_test)
    data = four_task_data(scifact_distractors, sts_pairs, news_train, news_test)
    out = {"settings": settings, "summary": {}, "per_query": {}, "task_mix": {}, "weights": {},
           "sts_gold": [float(s) for s in data.sts.scores], "data": data.sizes()}
    from ..multitask import task_mix

    base = None
    for recipe in recipes:
        for seed in (seeds if recipe != "base" else seeds[:1]):
            if recipe == "base":
                base = base or load_model("all-MiniLM-L6-v2")
                model, history = base, None
            else:
                model, history = train_recipe(recipe, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                                              max_length=max_length, top_layers=top_layers,
                                              rows_per_task=rows_per_task, progress=progress)
            scores = score_four_tasks(model, data, max_length=max_length)
            out["summary"].setdefault(recipe, {})[str(seed)] = scores["summary"]
            for family, items in scores["items"].items():
                out["per_query"][f"{recipe}/seed{seed}/{family}"] = items
            if history is not None:
                out["task_mix"].setdefault(recipe, {})[str(seed)] = task_mix(history)
                names = history.meta["tasks"]
                out["weights"].setdefault(recipe, {})[str(seed)] = {
                    n: [float(w) for w in history.values(f"weight/{n}")[1]] for n in names}
            if progress:
                print(recipe, seed, {k: round(v, 4) for k, v in scores["summary"].items()}, flush=True)
    return out


def merge_recipe_results(results: Sequence[dict]) -> dict:
    """Merge results of :func:`recipe_comparison` run with other recipes (``--append``); the rest must match."""
    first = results[0]
    fixed = {k: v for k, v in first["settings"].items() if k != "recipes"}
    merged = {**first, "summary": {}, "per_query": {}, "task_mix": {}, "weights": {}, "runs": []}
    recipes: list[str] = []
    for r in results:
        other = {k: v for k, v in r["settings"].items() if k != "recipes"}
        if other != fixed or r["sts_gold"] != first["sts_gold"]:
            raise ValueError(f"cannot merge runs with different settings: {fixed} vs {other}")
        for key in ("summary", "per_query", "task_mix", "weights"):
            merged[key].update(r[key])
        recipes += [x for x in r["settings"]["recipes"] if x not in recipes]
        merged["runs"] += r.get("runs", [])
    merged["settings"] = {**first["settings"], "recipes": recipes}
    return merged


def recipe_means(result: Mapping) -> dict[str, dict[str, tuple[float, float]]]:
    """recipe -> family -> (mean over seeds, standard deviation over seeds; 0 for one seed)."""
    out = {}
    for recipe, by_seed in result["summary"].items():
        values = {f: np.array([s[f] for s in by_seed.values()]) for f in FAMILIES}
        out[recipe] = {f: (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) for f, v in values.items()}
    return out


def _seed_items(result: Mapping, recipe: str, family: str) -> dict[str, dict[str, float]]:
    seeds = list(result["summary"][recipe])
    return {s: result["per_query"][f"{recipe}/seed{s}/{family}"] for s in seeds}


def _mean_items(by_seed: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    keys = list(next(iter(by_seed.values())))
    return {k: float(np.mean([items[k] for items in by_seed.values()])) for k in keys}


def compare_recipes(result: Mapping, a: str, b: str, n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Paired comparison of recipe ``a`` against recipe ``b`` on each family: ``{family: {diff, ci_low, ci_high, p}}``.

    - retrieval, classification: :func:`~.part3.paired_test` over claims / news items, each item's score
      averaged over the seeds first (both recipes share the items);
    - STS: :func:`~embedlessons.stats.paired_bootstrap_spearman` over pairs, the mean over seeds of the
      per-seed Spearman difference (the base model, one seed, is repeated to pair with every seed);
    - clustering: :func:`~.part3.paired_test` over the k-means runs of each seed (run r of seed s of ``a``
      against the same run of ``b``), so its interval reflects k-means and training seeds only.
    """
    from ..stats import paired_bootstrap_spearman

    for r in (a, b):
        if r not in result["summary"]:
            raise ValueError(f"recipe {r!r} is not in this result; it has {list(result['summary'])}")
    out = {}
    for family in ("retrieval", "classification"):
        out[family] = paired_test(_mean_items(_seed_items(result, a, family)),
                                  _mean_items(_seed_items(result, b, family)), n_resamples, seed)
    sa, sb = _seed_items(result, a, "sts"), _seed_items(result, b, "sts")
    n = max(len(sa), len(sb))
    stack = lambda by_seed: np.array([[v[str(i)] for i in range(len(result["sts_gold"]))]
                                      for v in by_seed.values()])
    xa, xb = stack(sa), stack(sb)
    xa, xb = np.repeat(xa, n // len(xa), axis=0), np.repeat(xb, n // len(xb), axis=0)
    out["sts"] = paired_bootstrap_spearman(xa, xb, result["sts_gold"], n_resamples=n_resamples, seed=seed)
    ca, cb = _seed_items(result, a, "clustering"), _seed_items(result, b, "clustering")
    flat = lambda by_seed, seeds: {f"{s}/{k}": v for s in seeds for k, v in by_seed[s if s in by_seed else
                                                                                    next(iter(by_seed))].items()}
    seeds = sorted(set(ca) | set(cb))
    out["clustering"] = paired_test(flat(ca, seeds), flat(cb, seeds), n_resamples, seed)
    return out


# ------------------------------------------------------------------------------------------------ MRL curve
#: Name of section 4.5's recorded multi-seed comparison of MRL training against plain training.
MRL_EXPERIMENT = "mrl_dimension_curve"


def mrl_dimension_curve(seeds: Sequence[int] = (0, 1, 2), steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
                        max_length: int = 64, top_layers: int | None = 3, temperature: float = 0.05,
                        dims: Sequence[int] = (384, 256, 128, 64, 32), scifact_distractors: int | None = 217,
                        max_rows: int | None = None, query_max_length: int = 64, doc_max_length: int = 128,
                        sts_pairs: int | None = None, progress: bool = True) -> dict:
    """MiniLM fine-tuned with and without MRL, several seeds, scored at every prefix length (section 4.5).

    Both arms are section 5.6's fine-tune of our trainer (:func:`~.part5_library.train_ours`: SciFact's labelled
    (claim, abstract) pairs, in-batch InfoNCE at ``temperature``, the top ``top_layers`` layers trained): ``plain``
    on the full vector, ``mrl`` wrapped in :class:`~embedlessons.matryoshka.MatryoshkaLoss` over ``dims``.
    Every model, and MiniLM untrained (``base``), is scored at each prefix length of ``dims`` (re-normalised):
    SciFact test NDCG@10 per claim (claims over the relevant abstracts plus ``scifact_distractors`` others) and
    the cosine of every STS-B test pair (its Spearman correlation with the gold scores is in ``summary``).

    Returns ``{"settings", "summary": {run: {"ndcg@10@<m>", "sts@<m>"}}, "per_query": {"<run>/dim<m>": {claim
    id: NDCG@10}}, "sts_cosines": {"<run>/dim<m>": [cosine per pair]}, "sts_gold": [...]}``, runs ``base``,
    ``plain/seed<s>`` and ``mrl/seed<s>``.
    """
    from ..matryoshka import truncate
    from .part5_library import train_ours

    dims = sorted({int(m) for m in dims}, reverse=True)
    settings = dict(seeds=list(seeds), steps=steps, batch_size=batch_size, lr=lr, max_length=max_length,
                    top_layers=top_layers, temperature=temperature, dims=dims, scifact_distractors=scifact_distractors,
                    max_rows=max_rows, query_max_length=query_max_length, doc_max_length=doc_max_length,
                    sts_pairs=sts_pairs)
    test = evaluation_subset(scifact_distractors)
    sts = load_sts("stsb", "test")
    n = len(sts.scores) if sts_pairs is None else min(sts_pairs, len(sts.scores))
    s1, s2 = list(sts.sentences1[:n]), list(sts.sentences2[:n])
    out = {"settings": settings, "summary": {}, "per_query": {}, "sts_cosines": {},
           "sts_gold": [float(x) for x in sts.scores[:n]]}

    def score(run: str, model) -> None:
        enc = functools.partial(model.encode, progress=False)
        q, d = enc(list(test.queries.values()), max_length=query_max_length), enc(test.doc_texts(),
                                                                                  max_length=doc_max_length)
        a, b = enc(s1, max_length=max_length), enc(s2, max_length=max_length)
        row = {}
        for m in dims:
            key = f"{run}/dim{m}"
            ndcg = ndcg_at_k(test.qrels, dense_run(truncate(q, m), truncate(d, m), test, top_k=100), k=10,
                             per_query=True)
            out["per_query"][key] = {c: float(v) for c, v in ndcg.items()}
            cos = (truncate(a, m) * truncate(b, m)).sum(axis=1)
            out["sts_cosines"][key] = [round(float(c), 5) for c in cos]
            row[f"ndcg@10@{m}"] = float(np.mean(list(ndcg.values())))
            row[f"sts@{m}"] = float(spearman(cos, out["sts_gold"]))
        out["summary"][run] = row
        if progress:
            print(run, {k: round(v, 4) for k, v in row.items()}, flush=True)

    from ..models import load_model

    score("base", load_model("all-MiniLM-L6-v2"))
    for seed in seeds:
        for arm, loss in (("plain", "info_nce"), ("mrl", "matryoshka_info_nce")):
            model, _ = train_ours(loss, seed=seed, steps=steps, batch_size=batch_size, lr=lr, max_length=max_length,
                                  top_layers=top_layers, max_rows=max_rows, temperature=temperature, dims=dims)
            score(f"{arm}/seed{seed}", model)
    return out


def compare_mrl(result: Mapping, dim: int, n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """MRL minus plain at prefix length ``dim``, over the seeds of :func:`mrl_dimension_curve`'s result.

    ``retrieval``: :func:`~.part3.paired_test` of per-claim NDCG@10, each claim's score averaged over the seeds;
    ``sts``: :func:`~embedlessons.stats.paired_bootstrap_spearman` over STS-B pairs, the mean over seeds of the
    per-seed Spearman difference. Each: ``{"diff", "ci_low", "ci_high", "p"}``.
    """
    from ..stats import paired_bootstrap_spearman

    seeds = result["settings"]["seeds"]
    if f"mrl/seed{seeds[0]}/dim{dim}" not in result["per_query"]:
        raise ValueError(f"no scores at dim {dim}; the result has dims {result['settings']['dims']}")

    def mean_ndcg(arm: str) -> dict[str, float]:
        return _mean_items({s: result["per_query"][f"{arm}/seed{s}/dim{dim}"] for s in seeds})

    cos = {arm: [result["sts_cosines"][f"{arm}/seed{s}/dim{dim}"] for s in seeds] for arm in ("mrl", "plain")}
    return {"retrieval": paired_test(mean_ndcg("mrl"), mean_ndcg("plain"), n_resamples, seed),
            "sts": paired_bootstrap_spearman(cos["mrl"], cos["plain"], result["sts_gold"], n_resamples, seed)}
