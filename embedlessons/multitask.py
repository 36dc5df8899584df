"""Multi-task training: one encoder, several tasks, one task per batch.

A *task* is a dataset and the loss that suits it: retrieval pairs with in-batch InfoNCE, STS pairs with CoSENT,
NLI triplets with InfoNCE and a hard negative, labelled texts with :class:`~embedlessons.task_losses.
PrototypeLoss` or a centre loss. Training on several tasks needs three decisions, each a piece here:

1. **Batches.** Every batch comes from *one* task. A batch that mixed tasks would score a query against an
   STS sentence or a news headline as an in-batch negative (a meaningless comparison), and its columns would
   not even line up (pairs, triplets, a text and a label). Sentence-transformers does the same (its
   round-robin and proportional multi-dataset samplers).
2. **Which task, each step** (:func:`task_probabilities`, :func:`task_schedule`): ``"uniform"`` (each task
   equally often), ``"proportional"`` (as often as it has rows), ``"temperature"`` (``p_i ~ n_i^(1/T)``:
   T = 1 is proportional, large T tends to uniform; Arivazhagan et al. 2019 for multilingual translation,
   Raffel et al. 2020 (T5) for multi-task mixing, with an optional cap ``max_size`` on n_i as in T5),
   or ``"round_robin"`` (tasks in turn). :func:`task_mix` gives the mix a run realised.
3. **How much each task's loss counts** (a :class:`TaskWeighting`): :class:`FixedWeights`,
   :class:`LossRatioWeighting` (weight grows with a task's recent loss relative to its initial one),
   :class:`DynamicWeightAverage` (Liu, Johns & Davison 2019) and :class:`UncertaintyWeighting` (Kendall,
   Gal & Cipolla 2018). The weights in effect at every step are logged as ``weight/<task>``.

:func:`train_multitask` runs all of this through the Part 2 trainer, :func:`~embedlessons.training.train`,
unchanged, so optimiser, schedule, clipping, mixed precision, dynamic padding, callbacks, checkpoints that
``sentence_transformers.SentenceTransformer(path)`` loads, and the run cache are the same code. The trainer
draws each batch from one dataset; here that dataset is a window of ``batch_size`` rows which, before every
step, a callback points at the rows the task's own batch sampler chose, and the loss it is given dispatches
to that task's loss (:class:`MultiTaskLoss`). The trainer's own sampler shuffles the window's rows, which
only reorders the batch.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .losses import LossOutput
from .training import (NoDuplicatesBatchSampler, RandomBatchSampler, TrainConfig, TrainHistory, _TextTupleDataset,
                       _batches, _check_texts, _describe, _hash_json, train)

__all__ = ["LabelledTextDataset", "labelled_texts", "Task", "SAMPLERS", "task_probabilities", "task_schedule",
           "task_mix", "TaskWeighting", "FixedWeights", "LossRatioWeighting", "DynamicWeightAverage",
           "UncertaintyWeighting", "MultiTaskLoss", "train_multitask"]

SAMPLERS = ("uniform", "proportional", "temperature", "round_robin")


# =============================================================================================== labelled texts
class LabelledTextDataset(_TextTupleDataset):
    """(text, label) rows for classification and clustering losses.

    ``dataset[i] -> (text, float(label))``: the trainer passes the last, non-text field of a row as a float
    tensor [B] after the embeddings, so a loss receives ``(embeddings [B, d], labels [B])``;
    :func:`~embedlessons.task_losses.class_labels` turns the labels back into int64.

    Args:
        texts: N texts.
        labels: N integer class labels in ``[0, n_classes)``.
    """

    columns = 1

    def __init__(self, texts: Sequence[str], labels: Sequence[int]):
        self.all_texts = _check_texts("texts", texts)
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(self.all_texts):
            raise ValueError(f"need one label per text: {len(self.all_texts)} texts, labels of shape {labels.shape}")
        if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
            raise ValueError(f"labels must be integers >= 0 (class indices), got dtype {labels.dtype}"
                             + (f", min {labels.min()}" if np.issubdtype(labels.dtype, np.number) else ""))
        self.labels = labels.astype(np.int64)

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.all_texts)

    def __getitem__(self, i: int) -> tuple[str, float]:
        return self.all_texts[i], float(self.labels[i])

    def _content(self):
        return [self.all_texts, self.labels.tolist()]


def labelled_texts(data, n: int | None = None, seed: int = 0) -> LabelledTextDataset:
    """A :class:`LabelledTextDataset` from :class:`~embedlessons.data.LabelledTexts` (e.g. AG News), all rows
    or a random ``n`` of them (seeded; ``n`` larger than the data is an error)."""
    idx = np.arange(len(data.texts))
    if n is not None:
        if not isinstance(n, (int, np.integer)) or not 0 < n <= len(idx):
            raise ValueError(f"n must be an int in [1, {len(idx)}], got {n!r}")
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), n, replace=False))
    return LabelledTextDataset([data.texts[i] for i in idx], np.asarray(data.labels)[idx])


# =============================================================================================== tasks
@dataclass
class Task:
    """One task of a multi-task run.

    Attributes:
        name: short unique name (no ``.`` or ``/``); logged per step as ``task`` and in ``weight/<name>``.
        dataset: a :class:`~embedlessons.training.PairDataset`, ``TripletDataset``, ``ScoredPairDataset``,
            :class:`LabelledTextDataset` (or anything :func:`~embedlessons.training.train` accepts).
        loss: called like a :func:`~embedlessons.training.train` loss on this dataset's batches.
        weight: fixed weight of this task's loss (used by :class:`FixedWeights`), >= 0.
        no_duplicates: batches without a repeated text (``NoDuplicatesBatchSampler``); None: the run
            config's ``no_duplicates``. Turn it off for labelled texts with few distinct texts.
    """

    name: str
    dataset: Any
    loss: Callable[..., LossOutput | Tensor]
    weight: float = 1.0
    no_duplicates: bool | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "." in self.name or "/" in self.name:
            raise ValueError(f"task name must be a non-empty string without '.' or '/', got {self.name!r}")
        if not hasattr(self.dataset, "__len__") or not hasattr(self.dataset, "__getitem__"):
            raise TypeError(f"task {self.name!r}: dataset must have __len__ and __getitem__, got "
                            f"{type(self.dataset).__name__}")
        if len(self.dataset) == 0:
            raise ValueError(f"task {self.name!r} has an empty dataset: nothing to train on")
        if not callable(self.loss):
            raise TypeError(f"task {self.name!r}: loss must be callable, got {type(self.loss).__name__}")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"task {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}")


def _check_tasks(tasks: Sequence[Task]) -> list[Task]:
    tasks = list(tasks)
    if not tasks:
        raise ValueError("the task list is empty: give at least one Task")
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"tasks must be Task objects, got {type(t).__name__}")
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"task names must be unique, repeated: {dupes}")
    return tasks


# =============================================================================================== samplers
def _sizes(sizes: Sequence[int]) -> np.ndarray:
    n = np.asarray(list(sizes))
    if n.ndim != 1 or len(n) == 0:
        raise ValueError("need the size of at least one task")
    if not np.issubdtype(n.dtype, np.integer) or (n < 1).any():
        raise ValueError(f"task sizes must be integers >= 1 (a task with an empty dataset cannot be sampled), "
                         f"got {n.tolist()}")
    return n.astype(np.float64)


def task_probabilities(sizes: Sequence[int], sampler: str = "temperature", temperature: float = 2.0,
                       max_size: int | None = None) -> np.ndarray:
    """How often each task is drawn, for tasks of ``sizes`` rows: probabilities [K] summing to 1.

    - ``"uniform"``: 1/K each.
    - ``"proportional"``: ``n_i / sum n``.
    - ``"temperature"``: ``n_i^(1/T) / sum_j n_j^(1/T)``; T = 1 is proportional, T -> inf uniform, T < 1
      favours the largest task even more than proportional.
    - ``"round_robin"``: tasks in turn; its long-run mix is uniform.

    ``max_size`` caps every n_i first (T5's "examples-proportional mixing" limit K), so one huge task cannot
    take over.

    References:
        Arivazhagan et al. (2019), Massively Multilingual Neural Machine Translation in the Wild
        (temperature-based sampling); Raffel et al. (2020), Exploring the Limits of Transfer Learning with a
        Unified Text-to-Text Transformer (examples-proportional and temperature-scaled mixing).
    """
    n = _sizes(sizes)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if max_size is not None:
        if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1 or None, got {max_size!r}")
        n = np.minimum(n, max_size)
    if sampler in ("uniform", "round_robin"):
        return np.full(len(n), 1 / len(n))
    if sampler == "proportional":
        return n / n.sum()
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"the sampler temperature must be a finite number > 0, got {temperature!r}")
    logits = np.log(n) / temperature                          # n^(1/T), computed in log space
    p = np.exp(logits - logits.max())
    return p / p.sum()


def task_schedule(sizes: Sequence[int], steps: int, sampler: str = "temperature", temperature: float = 2.0,
                  max_size: int | None = None, seed: int = 0) -> np.ndarray:
    """The task of every step: int array [steps] of task indices.

    Random samplers draw each step independently with :func:`task_probabilities` (NumPy generator seeded
    with ``seed``), so the realised mix differs from the expected one by sampling noise (a binomial
    standard deviation of ``sqrt(p (1 - p) / steps)``); ``"round_robin"`` cycles 0, 1, ..., K-1, 0, ...
    """
    p = task_probabilities(sizes, sampler, temperature, max_size)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if sampler == "round_robin":
        return np.arange(steps) % len(p)
    return np.random.default_rng(seed).choice(len(p), size=int(steps), p=p)


def task_mix(run: TrainHistory | Sequence[str], names: Sequence[str] | None = None) -> dict[str, float]:
    """The realised share of steps of each task: from a :func:`train_multitask` history (its per-step
    ``task``), or from a sequence of task names. ``names`` fixes the order and includes tasks never drawn
    (default: the run's tasks, or the names in order of first appearance)."""
    if isinstance(run, TrainHistory):
        drawn = [r["task"] for r in run.steps if "task" in r]
        names = list(names or run.meta.get("tasks") or dict.fromkeys(drawn))
    else:
        drawn = list(run)
        names = list(names or dict.fromkeys(drawn))
    if not drawn:
        raise ValueError("no steps with a task: nothing to count")
    unknown = sorted(set(drawn) - set(names))
    if unknown:
        raise ValueError(f"steps of tasks {unknown} that are not in names {names}")
    return {n: drawn.count(n) / len(drawn) for n in names}


# =============================================================================================== weighting
class TaskWeighting:
    """How much the loss of the step's task counts. A weighting is bound to the tasks of one run, then each
    step: :meth:`weights` (in effect now, logged), :meth:`combine` (the loss that is back-propagated),
    :meth:`observe` (the step's unweighted loss value, for schemes that adapt)."""

    def bind(self, tasks: Sequence[Task]) -> None:
        """Start a run over ``tasks`` (resets any state)."""
        self.names = [t.name for t in tasks]

    def weights(self) -> list[float]:  # pragma: no cover - overridden
        raise NotImplementedError

    def combine(self, task: int, loss: Tensor) -> Tensor:
        """``w_task * loss``."""
        return loss * self.weights()[task]

    def observe(self, task: int, value: float) -> None:
        """Record the step's unweighted loss of ``task`` (nothing by default)."""

    def cache_key(self) -> list:
        return [type(self).__name__, {k: v for k, v in sorted(vars(self).items())
                                      if not k.startswith("_") and k not in ("names", "training")
                                      and isinstance(v, (int, float, str, bool, type(None), list, tuple))}]


class FixedWeights(TaskWeighting):
    """Constant weights: each task's :attr:`Task.weight`, or ``weights`` (one per task, >= 0, not all 0)."""

    def __init__(self, weights: Sequence[float] | None = None):
        self.fixed = None if weights is None else [float(w) for w in weights]

    def bind(self, tasks: Sequence[Task]) -> None:
        super().bind(tasks)
        w = [t.weight for t in tasks] if self.fixed is None else self.fixed
        if len(w) != len(tasks):
            raise ValueError(f"weights has {len(w)} entries but there are {len(tasks)} tasks")
        if any(not (math.isfinite(x) and x >= 0) for x in w) or not any(x > 0 for x in w):
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
        self._w = list(w)

    def weights(self) -> list[float]:
        return list(self._w)


class LossRatioWeighting(TaskWeighting):
    """Weights that follow each task's progress: ``w_i ~ (L_i(recent) / L_i(initial))^alpha``, scaled to sum
    to K (so the average weight is 1, as with fixed weights of 1).

    ``L_i(initial)`` is the mean of task i's first ``window`` observed losses, ``L_i(recent)`` the mean of its
    last ``window``; until a task has more than ``window`` observations the two coincide and its ratio is 1.
    A task whose loss has fallen least (relative to where it started) gets the most weight.

    References:
        Liu, Liang & Gitter (2019), Loss-Balanced Task Weighting to Reduce Negative Transfer in Multi-Task
        Learning (``w_i = (L_i(t) / L_i(0))^alpha``); Chen et al. (2018), GradNorm (the same ratio as a
        task's "inverse training rate").
    """

    def __init__(self, alpha: float = 1.0, window: int = 10):
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.alpha, self.window = float(alpha), window

    def bind(self, tasks: Sequence[Task]) -> None:
        super().bind(tasks)
        self._first: list[list[float]] = [[] for _ in tasks]
        self._last: list[deque] = [deque(maxlen=self.window) for _ in tasks]

    def observe(self, task: int, value: float) -> None:
        if len(self._first[task]) < self.window:
            self._first[task].append(value)
        self._last[task].append(value)

    def ratios(self) -> list[float]:
        """``L_i(recent) / L_i(initial)`` of each task (1 before it is observed or if it started at <= 0)."""
        out = []
        for first, last in zip(self._first, self._last):
            start = float(np.mean(first)) if first else 0.0
            out.append(max(float(np.mean(last)) / start, 0.0) if start > 0 else 1.0)
        return out

    def weights(self) -> list[float]:
        r = np.asarray(self.ratios()) ** self.alpha
        k = len(r)
        return (k * r / r.sum()).tolist() if r.sum() > 0 else [1.0] * k


class DynamicWeightAverage(TaskWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison 2019): ``w_i = K softmax_i(r_i / T)`` with
    ``r_i = L_i(t-1) / L_i(t-2)``, the ratio of task i's mean loss over the last two periods.

    The paper's period is an epoch; with one task per batch it is here a window of ``window`` steps (a task
    not drawn in a window keeps its previous mean). For the first two windows all weights are 1. A task whose
    loss is falling slowly (r near or above 1) gets more weight than one that is falling fast; T > 0 sets
    how strongly (large T: equal weights).

    References:
        Liu, Johns & Davison (2019), End-to-End Multi-Task Learning with Attention (T = 2 there).
    """

    def __init__(self, temperature: float = 2.0, window: int = 20):
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.temperature, self.window = float(temperature), window

    def bind(self, tasks: Sequence[Task]) -> None:
        super().bind(tasks)
        k = len(tasks)
        self._steps, self._sum, self._count = 0, np.zeros(k), np.zeros(k)
        self._means: list[np.ndarray] = []               # per completed window: each task's mean loss
        self._w = [1.0] * k

    def observe(self, task: int, value: float) -> None:
        self._sum[task] += value
        self._count[task] += 1
        self._steps += 1
        if self._steps % self.window:
            return
        seen = self._count > 0
        mean = np.where(seen, self._sum / np.maximum(self._count, 1), np.nan)
        if self._means:
            mean = np.where(seen, mean, self._means[-1])    # not drawn in this window: keep the last mean
        self._means = (self._means + [mean])[-2:]
        self._sum[:], self._count[:] = 0, 0
        if len(self._means) == 2 and np.isfinite(self._means[0]).all() and np.isfinite(self._means[1]).all():
            prev, last = self._means
            r = np.where(prev > 0, last / np.where(prev > 0, prev, 1), 1.0)
            z = np.exp((r - r.max()) / self.temperature)
            self._w = (len(r) * z / z.sum()).tolist()

    def weights(self) -> list[float]:
        return list(self._w)


class UncertaintyWeighting(nn.Module, TaskWeighting):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla 2018): a learnable log-variance s_i per task,
    and the back-propagated loss ``exp(-s_i) L_i + s_i`` for the step's task i (its weight: ``exp(-s_i)``).

    For a fixed L_i the term is smallest at ``s_i = log L_i``: a task with a large (noisy, hard) loss gets a
    small weight, and the ``+ s_i`` stops every weight from going to 0. Kendall et al. write
    ``L / (2 sigma^2) + log sigma`` for regression; with ``s = log sigma^2`` that is half of the form here,
    which has the same minimiser. The total can be negative (once s_i < 0); only its gradient matters.

    The trainer gives every parameter the model's learning rate, at which (AdamW moves a parameter by about
    lr per step) s would hardly move in a fine-tune of a few hundred steps. So ``s = lr_scale * raw`` with
    ``raw`` the parameter: s moves about ``lr_scale * lr`` per step (100 x 2e-5 = 0.002).

    Args:
        init: starting s_i (0: weights 1).
        lr_scale: the factor above (> 0).

    References:
        Kendall, Gal & Cipolla (2018), Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
        Geometry and Semantics.
    """

    def __init__(self, init: float = 0.0, lr_scale: float = 100.0):
        nn.Module.__init__(self)
        if not math.isfinite(init):
            raise ValueError(f"init must be finite, got {init}")
        if not (math.isfinite(lr_scale) and lr_scale > 0):
            raise ValueError(f"lr_scale must be a finite number > 0, got {lr_scale}")
        self.init, self.lr_scale = float(init), float(lr_scale)
        self.raw = nn.Parameter(torch.zeros(0))

    def bind(self, tasks: Sequence[Task]) -> None:
        TaskWeighting.bind(self, tasks)
        self.raw = nn.Parameter(torch.full((len(tasks),), self.init / self.lr_scale))

    @property
    def log_vars(self) -> Tensor:
        """s [K]."""
        return self.raw * self.lr_scale

    def weights(self) -> list[float]:
        return torch.exp(-self.log_vars.detach()).tolist()

    def combine(self, task: int, loss: Tensor) -> Tensor:
        s = self.log_vars[task]
        return torch.exp(-s).to(loss.dtype) * loss + s.to(loss.dtype)

    def cache_key(self) -> list:
        return ["UncertaintyWeighting", {"init": self.init, "lr_scale": self.lr_scale}]


# =============================================================================================== the loss
class MultiTaskLoss(nn.Module):
    """The loss :func:`train_multitask` hands the trainer: calls the loss of task ``current`` on the batch and
    weights it with ``weighting`` (default :class:`FixedWeights`, i.e. each :attr:`Task.weight`).

    Stats of a step: the task loss's own stats as ``<task>/<stat>``, its unweighted value as ``task_loss`` and
    ``loss/<task>``, and every task's weight in effect as ``weight/<task>``. Task losses that are
    ``nn.Module`` (prototypes, a learnable temperature) and an :class:`UncertaintyWeighting` are submodules,
    so the trainer trains their parameters and the run cache stores them.
    """

    def __init__(self, tasks: Sequence[Task], weighting: TaskWeighting | None = None):
        super().__init__()
        tasks = _check_tasks(tasks)
        weighting = FixedWeights() if weighting is None else weighting
        if not isinstance(weighting, TaskWeighting):
            raise TypeError(f"weighting must be a TaskWeighting, got {type(weighting).__name__}")
        weighting.bind(tasks)
        self.names = [t.name for t in tasks]
        self.task_losses = [t.loss for t in tasks]
        self.task_weights = [float(t.weight) for t in tasks]
        self.task_modules = nn.ModuleDict({t.name: t.loss for t in tasks if isinstance(t.loss, nn.Module)})
        self.weighting = weighting
        self.current = 0

    def forward(self, *inputs) -> LossOutput:
        i, name = self.current, self.names[self.current]
        out = self.task_losses[i](*inputs)
        if isinstance(out, Tensor):
            out = LossOutput(out, {})
        if not isinstance(out, LossOutput) or not isinstance(out.loss, Tensor) or out.loss.dim() != 0:
            raise TypeError(f"the loss of task {name!r} must return a LossOutput with a scalar tensor (or a "
                            f"scalar tensor), got {type(out).__name__}")
        weights = self.weighting.weights()
        total = self.weighting.combine(i, out.loss)
        value = out.loss.detach().float().item()
        stats = {f"{name}/{k}": float(v) for k, v in out.stats.items()}
        stats.update({"task_loss": value, f"loss/{name}": value})
        stats.update({f"weight/{n}": float(w) for n, w in zip(self.names, weights)})
        if math.isfinite(value):
            self.weighting.observe(i, value)
        return LossOutput(total, stats)

    def cache_key(self) -> list:
        return ["MultiTaskLoss", [[n, _describe(f), w] for n, f, w in zip(self.names, self.task_losses,
                                                                         self.task_weights)],
                self.weighting.cache_key()]


# =============================================================================================== the run
class _StepRows:
    """What the trainer sees as its dataset: ``batch_size`` rows, the rows of this step's batch of one task."""

    def __init__(self, tasks: list[Task], batch_size: int, fingerprint: str):
        self.tasks, self.batch_size, self._fingerprint = tasks, batch_size, fingerprint
        self.task, self.rows = 0, None

    def point_at(self, task: int, rows: Sequence[int]) -> None:
        if len(rows) != self.batch_size:
            raise ValueError(f"a batch of task {self.tasks[task].name!r} has {len(rows)} rows, expected "
                             f"{self.batch_size}")
        self.task, self.rows = task, list(rows)

    @property
    def dataset(self):
        return self.tasks[self.task].dataset

    @property
    def columns(self) -> int:
        return self.dataset.columns

    @property
    def stack_negatives(self) -> bool:
        return getattr(self.dataset, "stack_negatives", False)

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, j: int):
        if self.rows is None:
            raise RuntimeError("no task batch chosen yet (train_multitask's scheduler callback runs first)")
        return self.dataset[self.rows[j]]

    def texts(self, j: int) -> tuple[str, ...]:
        return tuple(self[j][:self.columns])

    def fingerprint(self) -> str:
        return self._fingerprint


class _TaskScheduler:
    """Callback run first in every step: pick the step's task from the schedule, take the next batch of that
    task's own sampler, point the trainer's dataset and loss at it, and log the task's name."""

    def __init__(self, tasks: list[Task], schedule: np.ndarray, rows: _StepRows, loss: MultiTaskLoss,
                 config: TrainConfig, meta: dict):
        self.names, self.schedule, self.rows, self.loss, self.meta = [t.name for t in tasks], schedule, rows, \
            loss, meta
        self.streams = []
        for i, t in enumerate(tasks):
            no_dup = config.no_duplicates if t.no_duplicates is None else t.no_duplicates
            sampler_cls = NoDuplicatesBatchSampler if no_dup else RandomBatchSampler
            try:
                sampler = sampler_cls(t.dataset, config.batch_size, seed=config.seed + i)
            except ValueError as err:
                raise ValueError(f"task {t.name!r}: {err}") from None
            self.streams.append(_batches(sampler))

    def cache_key(self) -> list:
        return ["TaskScheduler", self.meta["sampler"], self.meta["temperature"], self.meta["max_size"],
                self.meta["task_no_duplicates"]]

    def on_train_begin(self, state) -> None:
        state.history.meta.update(self.meta)
        state.history.meta["dataset_rows"] = dict(zip(self.names, self.meta["task_rows"]))

    def on_step_begin(self, state) -> None:
        task = int(self.schedule[state.step - 1])
        self.rows.point_at(task, next(self.streams[task]))
        self.loss.current = task
        state.history.log(state.step, task=self.names[task])


def train_multitask(model, tasks: Sequence[Task], config: TrainConfig, sampler: str = "temperature",
                    temperature: float = 2.0, max_size: int | None = None, weighting: TaskWeighting | None = None,
                    evaluator=None, callbacks: Sequence = (), cache: bool = False,
                    progress: bool = True) -> TrainHistory:
    """Train one bi-encoder on several tasks, one task per batch, with :func:`~embedlessons.training.train`.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder` (trained in place).
        tasks: :class:`Task` objects (at least one, unique names, non-empty datasets of >= batch_size rows).
        config: :class:`~embedlessons.training.TrainConfig` of the run; ``steps`` counts batches of all tasks
            together, ``batch_size`` holds for every task, ``no_duplicates`` is each task's default, ``seed``
            seeds the task schedule, each task's batch order (task i: ``seed + i``) and dropout.
        sampler, temperature, max_size: which task each step (:func:`task_probabilities`).
        weighting: a :class:`TaskWeighting` (default :class:`FixedWeights`: each task's ``weight``).
        evaluator, callbacks, cache, progress: as for :func:`~embedlessons.training.train`. Callbacks run after
            the task scheduler, so in ``on_step_begin`` ``state.dataset.task`` is the index of the step's task.

    Returns:
        the :class:`~embedlessons.training.TrainHistory`. Each step also records ``task`` (its name),
        ``task_loss`` (unweighted), ``loss/<task>``, ``weight/<task>`` of every task (e.g.
        ``history.values("weight/sts")``) and the task loss's stats as ``<task>/<stat>``; ``loss`` is the
        weighted loss that was back-propagated. ``history.meta`` holds ``tasks``, ``task_rows``, ``sampler``,
        ``expected_mix`` (compare with :func:`task_mix`) and ``weighting``.

    With one task, fixed weight 1, this is ``train(model, task.dataset, task.loss, config)`` with the same
    batches (in another order within each batch). With ``cache=True`` a hit restores the model, the
    parameters of the losses and of an :class:`UncertaintyWeighting`, and the history; the running state of
    :class:`LossRatioWeighting` or :class:`DynamicWeightAverage` is not restored (its weights are in the
    history).
    """
    tasks = _check_tasks(tasks)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    sizes = [len(t.dataset) for t in tasks]
    probs = task_probabilities(sizes, sampler, temperature, max_size)
    schedule = task_schedule(sizes, config.steps, sampler, temperature, max_size, seed=config.seed)
    loss = MultiTaskLoss(tasks, weighting).to(model.device)
    no_dup = [config.no_duplicates if t.no_duplicates is None else t.no_duplicates for t in tasks]
    meta = {"tasks": [t.name for t in tasks], "task_rows": sizes, "sampler": sampler,
            "temperature": float(temperature) if sampler == "temperature" else None, "max_size": max_size,
            "expected_mix": dict(zip([t.name for t in tasks], probs.tolist())),
            "task_no_duplicates": no_dup, "weighting": loss.weighting.cache_key()}
    fingerprint = _hash_json(["multitask", [[t.name, t.dataset.fingerprint(), d] for t, d in zip(tasks, no_dup)],
                              sampler, meta["temperature"], max_size])
    rows = _StepRows(tasks, config.batch_size, fingerprint)
    scheduler = _TaskScheduler(tasks, schedule, rows, loss, config, meta)
    # the trainer's own sampler only shuffles the window of batch_size rows: no duplicate check there
    window_config = dataclasses.replace(config, no_duplicates=False)
    return train(model, rows, loss, window_config, evaluator=evaluator, callbacks=[scheduler, *callbacks],
                 cache=cache, progress=progress)
