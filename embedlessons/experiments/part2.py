"""Small, repeatable training experiments for Part 2 (sections 2.1, 2.3, 2.4).

A *sweep* trains the same small model several times, changing one setting (batch size, temperature,
the loss's direction...), and compares the trained models on held-out data. To fit many runs into a
notebook that executes in one to two minutes on a CPU, every run here uses:

- a small BERT trained from random initialisation (:func:`sweep_model`: 2 layers, 64 wide, MiniLM's
  tokenizer; ``embedlessons.models.small_bert``),
- SNLI entailment pairs (premise -> entailed hypothesis, Bowman et al. 2015): the ``snli_dev`` split
  for training and ``snli_test`` for held-out checks (:func:`snli_pairs`),
- the trainer of :mod:`embedlessons.training` with its run cache, so a second execution (and the book
  build) reuses the trained weights,
- STS-B test Spearman (Cer et al. 2017) as the quality measure (:func:`stsb_evaluator`).

The other helpers measure what the notebooks plot: cosines of matching vs non-matching held-out pairs
(:func:`pair_cosines`, :func:`auc`), retrieval in both directions (:func:`pair_retrieval_accuracy`), the
loss of gradient accumulation (:func:`accumulated_in_batch_loss`), duplicate texts in batches
(:func:`duplicate_rows`; ``embedlessons.training.count_duplicate_batches`` counts the batches that have
one) and what a temperature does to the softmax (:func:`softmax_entropy`, :func:`hardest_negative_share`).

Comparisons are repeated over seeds (:func:`train_seeds`: seed ``s`` sets the initial weights, the batch
order and dropout), and summarised with :mod:`embedlessons.stats` (mean, spread, seed-paired differences);
:func:`sts_cosines` gives the per-pair cosines for a paired bootstrap over STS-B pairs (and
:class:`SharedBottom` the same for many fine-tunes of one start whose lower layers stay frozen, at about half
the cost).

The notebooks that use this module call ``torch.set_num_threads(1)``: the model is tiny, and on a
shared machine one thread avoids the slowdown of oversubscribed threads.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SWEEP_MODEL", "SWEEP_MAX_LENGTH", "SEEDS", "snli_pairs", "sweep_model", "stsb_evaluator", "SweepRun",
           "train_small", "train_seeds", "spearmans", "sts_cosines", "SharedBottom", "pair_cosines",
           "pair_retrieval_accuracy", "auc", "accumulated_in_batch_loss", "duplicate_rows", "sequential_batches",
           "random_batches", "softmax_entropy", "hardest_negative_share"]

#: Architecture of the sweep model (``small_bert`` arguments): ~2.1M parameters, 1.95M of them the embedding table.
SWEEP_MODEL = dict(num_layers=2, hidden_size=64, num_heads=2, intermediate_size=256)
#: Token limit for SNLI sentences in training (SNLI premises average ~16 tokens, hypotheses ~9).
SWEEP_MAX_LENGTH = 32
#: Seeds of the multi-seed comparisons of sections 2.3 and 2.4.
SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------------------------- data, model
@functools.lru_cache(maxsize=4)
def _snli_columns(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from ..data import load_nli_pairs

    nli = load_nli_pairs("snli", split)
    keep = [i for i, label in enumerate(nli.labels) if label == "entailment"]
    return tuple(nli.premises[i] for i in keep), tuple(nli.hypotheses[i] for i in keep)


def snli_pairs(split: str = "snli_dev"):
    """SNLI (premise, entailed hypothesis) pairs of one split as a :class:`~embedlessons.training.PairDataset`.

    Args:
        split: ``"snli_dev"`` (3,329 pairs; the training data of Part 2's sweeps) or ``"snli_test"``
            (3,368 pairs; held out).
    """
    from ..training import PairDataset

    if split not in ("snli_dev", "snli_test"):
        raise ValueError(f"split must be 'snli_dev' or 'snli_test', got {split!r}")
    anchors, positives = _snli_columns(split)
    return PairDataset(list(anchors), list(positives))


def sweep_model(seed: int = 0, **overrides):
    """A fresh random-initialised :func:`~embedlessons.models.small_bert` with :data:`SWEEP_MODEL` settings.

    ``overrides`` replace entries of :data:`SWEEP_MODEL` (e.g. ``num_layers=1``). Same seed, same weights.
    """
    from ..models import small_bert

    unknown = set(overrides) - set(SWEEP_MODEL)
    if unknown:
        raise ValueError(f"unknown sweep-model settings {sorted(unknown)}; choose from {sorted(SWEEP_MODEL)}")
    return small_bert(**{**SWEEP_MODEL, **overrides}, max_length=SWEEP_MAX_LENGTH, seed=seed)


@functools.lru_cache(maxsize=2)
def stsb_evaluator(split: str = "test", max_length: int = 64):
    """:class:`~embedlessons.evaluators.STSEvaluator` on STS-B ``split``; returns ``{"stsb_spearman": rho}``."""
    from ..data import load_sts
    from ..evaluators import STSEvaluator

    return STSEvaluator(load_sts("stsb", split), max_length=max_length, name="stsb")


# ----------------------------------------------------------------------------------------------- one run
@dataclass
class SweepRun:
    """One trained model of a sweep: its label, settings, training history and final metrics."""

    label: str
    settings: dict
    history: object                      # embedlessons.training.TrainHistory
    metrics: dict[str, float] = field(default_factory=dict)
    model: object = None                 # the trained BiEncoder (None when not kept)

    @property
    def spearman(self) -> float:
        return self.metrics["stsb_spearman"]


def train_small(loss=None, steps: int = 100, batch_size: int = 32, *, lr: float = 1e-3, temperature: float = 0.05,
                symmetric: bool = False, seed: int = 0, model_seed: int = 0, dataset=None, evaluator="stsb",
                no_duplicates: bool = True, max_length: int = SWEEP_MAX_LENGTH, label: str = "",
                keep_model: bool = False, cache: bool = True, device: str | None = None,
                **model_overrides) -> SweepRun:
    """Train :func:`sweep_model` on SNLI pairs with in-batch InfoNCE and evaluate it.

    Args:
        loss: a loss for :func:`~embedlessons.training.train`; default
            ``in_batch_info_nce(temperature=temperature, symmetric=symmetric)``.
        steps, batch_size, lr, seed, no_duplicates: the :class:`~embedlessons.training.TrainConfig` settings
            (warm-up 10 %, linear decay, AdamW, clipping at 1.0).
        max_length: token limit of the training texts (default :data:`SWEEP_MAX_LENGTH`; shorter is faster).
        model_seed: seed of the random initial weights.
        dataset: training pairs; default :func:`snli_pairs` ``("snli_dev")``.
        evaluator: ``"stsb"`` (STS-B test Spearman), any ``callable(model) -> dict``, or None.
        label: a name for tables and plots.
        keep_model: keep the trained model in the result (else it is dropped to free memory).
        cache: use the trainer's run cache (a repeated run loads weights and history instead of training).
        device: where to train (``"cuda"`` for the full-size variants; default CPU).
        model_overrides: passed to :func:`sweep_model`.

    Returns:
        :class:`SweepRun` whose ``metrics`` are the evaluator's final values.
    """
    from ..losses import in_batch_info_nce
    from ..training import TrainConfig, train

    if loss is None:
        loss = functools.partial(in_batch_info_nce, temperature=temperature, symmetric=symmetric)
    if evaluator == "stsb":
        evaluator = stsb_evaluator()
    dataset = snli_pairs("snli_dev") if dataset is None else dataset
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed,
                         no_duplicates=no_duplicates)
    model = sweep_model(model_seed, **model_overrides)
    if device is not None:
        model = model.to(device)
    history = train(model, dataset, loss, config, evaluator=evaluator, cache=cache, progress=False)
    metrics = dict(history.final_eval or {})
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "model_seed": model_seed,
                "no_duplicates": no_duplicates, "max_length": max_length, "examples": steps * batch_size}
    return SweepRun(label, settings, history, metrics, model if keep_model else None)


def train_seeds(seeds: Sequence[int] = SEEDS, label: str = "", **settings) -> dict[int, SweepRun]:
    """The same :func:`train_small` setting trained once per seed: ``{seed: SweepRun}``.

    Seed ``s`` is both the training seed (batch order, dropout) and the seed of the initial weights, so two
    settings trained with the same seeds start from the same weights: their per-seed differences are paired
    (:func:`embedlessons.stats.seed_paired_difference`).

    Args:
        seeds: distinct ints, at least 2 (a spread needs two runs); default :data:`SEEDS`.
        label: name of the setting; each run is labelled ``"<label>, seed <s>"``.
        settings: everything else :func:`train_small` takes (``steps``, ``batch_size``, ``symmetric``, ...).
    """
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"need at least 2 distinct seeds, got {seeds}")
    clash = {"seed", "model_seed"} & set(settings)
    if clash:
        raise ValueError(f"train_seeds sets {sorted(clash)} from seeds=...; do not pass them")
    return {s: train_small(seed=s, model_seed=s, label=f"{label}, seed {s}" if label else f"seed {s}", **settings)
            for s in seeds}


def spearmans(runs: dict[int, SweepRun]) -> dict[int, float]:
    """``{seed: STS-B Spearman}`` of the runs of :func:`train_seeds`."""
    return {s: r.spearman for s, r in runs.items()}


def sts_cosines(model, split: str = "test", max_length: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each STS-B pair under ``model`` and the gold scores, two float arrays of length N.

    The inputs of :func:`embedlessons.stats.paired_bootstrap_spearman`; their Spearman correlation is what
    :func:`stsb_evaluator` reports (the same sentences, the same token limit).
    """
    from ..data import load_sts

    pairs = load_sts("stsb", split)
    a = model.encode(pairs.sentences1, max_length=max_length, batch_size=64, progress=False)
    b = model.encode(pairs.sentences2, max_length=max_length, batch_size=64, progress=False)
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1), np.asarray(pairs.scores, dtype=np.float64)


class SharedBottom:
    """STS-B pairs pushed once through the frozen bottom of a model, for the cosines of many of its fine-tunes.

    A model fine-tuned with ``TrainTopLayers(top_layers)`` (:mod:`embedlessons.experiments.part3`) keeps the
    token embeddings and lower layers of its start, so on fixed texts the input of its top layers is the
    start's. That input is computed once here (the start's hidden states after its lower layers);
    :meth:`cosines` then runs only a fine-tuned model's top layers, pooling and normalisation: with MiniLM
    and ``top_layers=3``, half the encoding of a full :func:`sts_cosines`, with the same numbers to float
    rounding (tests/test_experiments_part2.py checks both).

    Args:
        start: the :class:`~embedlessons.models.BiEncoder` before fine-tuning (BERT-style:
            ``transformer.embeddings`` and ``transformer.encoder.layer``).
        top_layers: the layers the fine-tunes train (1 to the number of layers).
        split, max_length, batch_size: the STS-B split, token limit and texts per forward pass.
    """

    def __init__(self, start, top_layers: int, split: str = "test", max_length: int = 64, batch_size: int = 64):
        from ..data import load_sts

        layers = start.transformer.encoder.layer
        if not 1 <= top_layers <= len(layers):
            raise ValueError(f"top_layers must be in 1..{len(layers)} for this model, got {top_layers}")
        self.top_layers = top_layers
        self.n_bottom = len(layers) - top_layers
        self._frozen = {k: v.detach().clone() for k, v in self._frozen_state(start).items()}
        pairs = load_sts("stsb", split)
        self.gold = np.asarray(pairs.scores, dtype=np.float64)
        texts = list(pairs.sentences1) + list(pairs.sentences2)
        unique = list(dict.fromkeys(texts))
        self._row = {t: i for i, t in enumerate(unique)}
        self._index = np.array([self._row[t] for t in texts])
        order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))       # longest first: little padding
        self._batches = []                                   # (row ids, tokenised batch, hidden after the bottom)
        self._dim = start.dim
        vectors = np.zeros((len(unique), self._dim), dtype=np.float32)
        start.eval()
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size]
                batch = start.tokenize([unique[i] for i in rows], max_length=max_length)
                states = start.transformer(**batch, output_hidden_states=True).hidden_states
                self._batches.append((rows, batch, states[self.n_bottom]))
                vectors[rows] = self._pooled(start, states[-1], batch)
        #: the start's own cosines [N] (its full forward pass gave them on the way)
        self.start_cosines = self._pair_cosines(vectors)

    def _frozen_state(self, model) -> dict[str, torch.Tensor]:
        """The weights a TrainTopLayers fine-tune keeps: the embeddings and the lower ``n_bottom`` layers."""
        bottom = ("embeddings.",) + tuple(f"encoder.layer.{i}." for i in range(self.n_bottom))
        return {k: v for k, v in model.transformer.state_dict().items() if k.startswith(bottom)}

    def cosines(self, model) -> np.ndarray:
        """Cosine of each STS-B pair under ``model`` (float array [N]), running only its top layers.

        Raises ValueError when the model's embeddings or lower layers differ from the start's (it was not
        trained with ``TrainTopLayers(top_layers)`` from that start)."""
        state = self._frozen_state(model)
        if state.keys() != self._frozen.keys() or not all(torch.equal(state[k], v) for k, v in self._frozen.items()):
            raise ValueError(f"this model's embeddings or lower {self.n_bottom} layers differ from the start's: "
                             f"SharedBottom needs fine-tunes trained with TrainTopLayers({self.top_layers})")
        transformer = model.transformer
        layers, embeddings = transformer.encoder.layer, transformer.embeddings
        vectors = np.zeros((len(self._row), self._dim), dtype=np.float32)
        was_training = model.training
        model.eval()
        try:
            transformer.encoder.layer = torch.nn.ModuleList(list(layers)[self.n_bottom:])
            with torch.no_grad():
                for rows, batch, hidden in self._batches:
                    transformer.embeddings = _Given(hidden)      # the stored input of the top layers
                    vectors[rows] = self._pooled(model, transformer(**batch).last_hidden_state, batch)
        finally:
            transformer.encoder.layer, transformer.embeddings = layers, embeddings
            model.train(was_training)
        return self._pair_cosines(vectors)

    @staticmethod
    def _pooled(model, tokens: torch.Tensor, batch) -> np.ndarray:
        from ..models import pool

        out = pool(tokens, batch["attention_mask"], model.pooling)
        return (F.normalize(out, dim=-1) if model.normalize else out).numpy()

    def _pair_cosines(self, vectors: np.ndarray) -> np.ndarray:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        n = len(self.gold)
        return (vectors[self._index[:n]] * vectors[self._index[n:]]).sum(1)


class _Given(torch.nn.Module):
    """Stands in for a transformer's embedding layer: returns the hidden states it was given."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, **_) -> torch.Tensor:
        return self.hidden


# ----------------------------------------------------------------------------------------------- measuring
def pair_cosines(model, anchors: Sequence[str], positives: Sequence[str], max_length: int = SWEEP_MAX_LENGTH,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of matching pairs (anchor i, positive i) and of mismatched pairs (anchor i, positive pi(i)).

    pi is a random permutation without fixed points (seeded), so every anchor gets exactly one random
    non-matching partner from the same set. Returns two float arrays of length N.
    """
    if len(anchors) != len(positives):
        raise ValueError(f"{len(anchors)} anchors but {len(positives)} positives")
    if len(anchors) < 2:
        raise ValueError("need at least 2 pairs to form mismatched pairs")
    a = model.encode(list(anchors), max_length=max_length, progress=False)
    p = model.encode(list(positives), max_length=max_length, progress=False)
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    p = p / np.linalg.norm(p, axis=1, keepdims=True).clip(1e-12)
    n = len(a)
    perm = np.random.default_rng(seed).permutation(n)
    shift = (perm + np.random.default_rng(seed + 1).integers(1, n)) % n   # no i maps to itself
    partner = np.empty(n, dtype=int)
    partner[perm] = shift                                                # a derangement: partner[i] != i
    return (a * p).sum(1), (a * p[partner]).sum(1)


def pair_retrieval_accuracy(model, anchors: Sequence[str], positives: Sequence[str],
                            max_length: int = SWEEP_MAX_LENGTH) -> dict[str, float]:
    """Top-1 retrieval accuracy in both directions over a set of held-out pairs.

    ``"anchor->positive"``: for each anchor, is its own positive the most similar of all N positives?
    ``"positive->anchor"``: the reverse. Rows whose anchor or positive text occurs more than once are
    dropped first (a repeated text would have two right answers). ``"pairs"`` gives the N used.
    """
    from collections import Counter

    if len(anchors) != len(positives):
        raise ValueError(f"{len(anchors)} anchors but {len(positives)} positives")
    count_a, count_p = Counter(anchors), Counter(positives)
    keep = [i for i in range(len(anchors)) if count_a[anchors[i]] == 1 and count_p[positives[i]] == 1]
    if len(keep) < 2:
        raise ValueError("need at least 2 pairs with distinct texts")
    a = model.encode([anchors[i] for i in keep], max_length=max_length, progress=False)
    p = model.encode([positives[i] for i in keep], max_length=max_length, progress=False)
    sims = a @ p.T
    target = np.arange(len(keep))
    return {"anchor->positive": float((sims.argmax(1) == target).mean()),
            "positive->anchor": float((sims.argmax(0) == target).mean()), "pairs": len(keep)}


def auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count 1/2): ROC AUC."""
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("need at least one positive and one negative score")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def accumulated_in_batch_loss(anchor: torch.Tensor, positive: torch.Tensor, micro_batch: int,
                              temperature: float = 0.05, symmetric: bool = False) -> torch.Tensor:
    """The loss that gradient accumulation optimises: the mean of in-batch InfoNCE over micro-batches.

    Splits the B rows into consecutive micro-batches of ``micro_batch`` rows (B must be a multiple) and
    averages :func:`~embedlessons.losses.in_batch_info_nce` over them. Each anchor's candidates are only the
    ``micro_batch`` positives of its own micro-batch, so it sees ``micro_batch - 1`` negatives, not ``B - 1``:
    accumulating 4 micro-batches of 16 gives the gradient of this loss, not of the batch-64 loss (Gao et al.
    2021, GradCache, computes the latter in chunks).
    """
    from ..losses import in_batch_info_nce

    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(f"expected anchor and positive of the same shape [B, d], got {tuple(anchor.shape)} "
                         f"and {tuple(positive.shape)}")
    if micro_batch < 1 or len(anchor) % micro_batch:
        raise ValueError(f"micro_batch must divide the batch size {len(anchor)}, got {micro_batch}")
    losses = [in_batch_info_nce(anchor[s:s + micro_batch], positive[s:s + micro_batch], temperature=temperature,
                                symmetric=symmetric).loss for s in range(0, len(anchor), micro_batch)]
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------------------------- duplicates
def _row_texts(dataset, i: int) -> tuple[str, ...]:
    return tuple(dataset.texts(i)) if hasattr(dataset, "texts") else tuple(dataset[i][:dataset.columns])


def duplicate_rows(dataset, batch: Sequence[int]) -> list[tuple[int, int, str]]:
    """Pairs of batch positions (i < j) whose rows share a text, with the shared text.

    With in-batch negatives each such pair is a false negative: row i's anchor is pushed away from a text
    that equals its own anchor or positive.
    """
    first: dict[str, int] = {}
    found = []
    for pos, row in enumerate(batch):
        for text in dict.fromkeys(_row_texts(dataset, row)):
            if text in first and first[text] != pos:
                found.append((first[text], pos, text))
            else:
                first.setdefault(text, pos)
    return found


def sequential_batches(n_rows: int, batch_size: int) -> list[list[int]]:
    """Rows in file order, cut into full batches (what a loader without shuffling yields)."""
    return [list(range(s, s + batch_size)) for s in range(0, n_rows - batch_size + 1, batch_size)]


def random_batches(n_rows: int, batch_size: int, epochs: int = 1, seed: int = 0) -> list[list[int]]:
    """Shuffled full batches for ``epochs`` epochs (a new permutation each epoch, seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(n_rows).tolist()
        out += [order[s:s + batch_size] for s in range(0, n_rows - batch_size + 1, batch_size)]
    return out


# ----------------------------------------------------------------------------------------------- temperature
def softmax_entropy(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy (nats) of ``softmax(scores / temperature)`` along the last dimension."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = F.log_softmax(scores / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def hardest_negative_share(sims: torch.Tensor, temperature: float, top: int = 1) -> torch.Tensor:
    """Share of the push on the negatives that goes to each row's ``top`` most similar negatives.

    ``sims`` is a square [B, B] matrix of in-batch cosines with the positives on the diagonal. For InfoNCE
    the gradient of the loss w.r.t. the score of negative j is p_j / t (p = softmax of the row), so negative
    j's share of the push is p_j / sum_negatives(p), which concentrates on the hardest negatives as t falls
    (Wang & Liu 2021). Returns a [B] tensor of shares in (0, 1].
    """
    if sims.dim() != 2 or sims.shape[0] != sims.shape[1]:
        raise ValueError(f"sims must be a square [B, B] matrix, got {tuple(sims.shape)}")
    if not 1 <= top < len(sims):
        raise ValueError(f"top must be between 1 and B-1 = {len(sims) - 1}, got {top}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    eye = torch.eye(len(sims), dtype=torch.bool, device=sims.device)
    neg = sims.masked_fill(eye, float("-inf")) / temperature          # negatives only, still one softmax row
    weights = torch.softmax(neg, dim=-1)                              # p_j / sum of negatives' p
    return weights.topk(top, dim=-1).values.sum(-1)
