"""Section 5.6, the library way: the same fine-tune with sentence-transformers' own trainer, beside ours.

Part 2 built a trainer from its pieces; sentence-transformers ships one (``SentenceTransformerTrainer``, a
Hugging Face ``Trainer``). This module runs the same fine-tune of MiniLM on SciFact's labelled (claim,
abstract) pairs (:func:`~.part5.pair_tasks`) through both, at the same steps, batch size, learning rate and
schedule, clipping, weight decay, token limit, frozen layers and seed, and scores both the same way as
section 5.2 (NDCG@10 per test claim, :func:`~.part5.pair_source_comparison`):

- :func:`loss_parity`: the losses agree before any training: our in-batch InfoNCE and
  ``MultipleNegativesRankingLoss`` (MNRL, Henderson et al. 2017), our and their ``MatryoshkaLoss``
  (Kusupati et al. 2022), and GradCache's ``CachedMultipleNegativesRankingLoss`` (Gao et al. 2021) against
  MNRL, in value and gradients;
- :func:`trainer_parity`: with the *same* batches and dropout off, the two trainers end at the same weights
  (so optimiser, schedule, clipping and freezing match);
- :func:`train_with_library` / :func:`train_ours`: one run of each;
- :func:`library_comparison`: every arm of :data:`ARMS` with every seed (the recorded experiment
  ``library_vs_ours``), and :func:`compare_arms` for a paired difference of two arms.

What still differs between ``ours_*`` and ``st_*`` runs of one seed is the data order and the dropout masks
(:data:`UNAVOIDABLE_DIFFERENCES`): the kind of difference two seeds of one trainer also have. Both run on the
CPU in float32 (ours would use bf16 autocast on a GPU).
"""
from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..evaluation import mrr_at_k, ndcg_at_k, recall_at_k
from ..retrieval import dense_run
from ..training import global_rng_kept
from .part3 import TrainTopLayers, evaluation_subset
from .part5 import compare_sources, pair_tasks

__all__ = ["ARMS", "ST_LOSSES", "OUR_LOSSES", "MATRYOSHKA_DIMS", "LIBRARY_EXPERIMENT", "UNAVOIDABLE_DIFFERENCES",
           "labelled_pairs", "loss_parity", "train_with_library", "train_ours", "trainer_parity",
           "library_comparison", "compare_arms"]

ST_LOSSES = ("mnrl", "cached_mnrl", "matryoshka_mnrl")
OUR_LOSSES = ("info_nce", "matryoshka_info_nce")
#: arm name -> (trainer, loss): "ours" is :func:`train_ours`, "st" is :func:`train_with_library`.
ARMS: dict[str, tuple[str, str]] = {
    "ours_info_nce": ("ours", "info_nce"), "st_mnrl": ("st", "mnrl"), "st_cached_mnrl": ("st", "cached_mnrl"),
    "ours_matryoshka": ("ours", "matryoshka_info_nce"), "st_matryoshka": ("st", "matryoshka_mnrl")}
MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)
#: Name of the recorded comparison (``embedlessons/results/<name>.json``, :mod:`embedlessons.recorded`).
LIBRARY_EXPERIMENT = "library_vs_ours"
UNAVOIDABLE_DIFFERENCES = (
    "data order: both samplers fill each batch greedily from a shuffled order, skipping a row when one of its "
    "texts is already in the batch, but ours shuffles with numpy.random.default_rng([seed, epoch]) and "
    "sentence-transformers with torch.randperm on a torch.Generator seeded with seed + epoch, so one seed gives "
    "other batches; and when a pass cannot fill the batches its length promises, sentence-transformers "
    "reshuffles within the epoch, ours starts the next epoch",
    "dropout masks: both trainers seed torch's global generator with the seed, but each time the Hugging Face "
    "trainer starts an epoch its DataLoader iterator draws one int64 (the workers' base seed) from that "
    "generator, so every later mask is shifted; with the same batches and that one draw added to ours, the two "
    "runs agree with dropout on (trainer_parity)",
    "cached MNRL draws its dropout masks per mini-batch (and replays them in its second pass, so its gradient "
    "is exact for those masks), not for the whole batch at once: other masks than MNRL, even on the same batch",
    "logging only: the Hugging Face trainer logs the lr after the scheduler step, ours the lr the step used",
)


def _choice(name: str, choices: Sequence[str], what: str) -> str:
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of {list(choices)}")
    return name


def labelled_pairs(max_rows: int | None = None):
    """SciFact's (training claim, relevant abstract) pairs, a :class:`~embedlessons.training.PairDataset`
    (section 5.2's ``labelled`` source; ``max_rows``: a seeded sample, for tests)."""
    return pair_tasks("labelled", max_rows=max_rows)[0].dataset


def _no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _st_minilm(max_length: int, dropout: bool = True):
    """all-MiniLM-L6-v2 as a ``SentenceTransformer`` (from the bundled folder, on the CPU like ours)."""
    from sentence_transformers import SentenceTransformer

    from ..models import _quiet_loading, minilm_path

    with _quiet_loading():
        model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = max_length
    if not dropout:
        _no_dropout(model)
    return model


def _hf(st_model) -> nn.Module:
    """The Hugging Face encoder inside a SentenceTransformer (``BertModel``)."""
    first = st_model[0]
    return first.model if hasattr(first, "model") else first.auto_model


class _Columns(nn.Module):
    """Hands sentence-transformers' losses precomputed embeddings: each feature dict carries its column."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}

    def get_embedding_dimension(self) -> int:
        return self.dim


    # sentence-transformers >= 6.3 asks the model for its full width this way
    _get_untruncated_embedding_dimension = get_embedding_dimension


def _gap(a, b) -> float:
    """Largest absolute difference between two tensors or two lists of tensors."""
    pairs = zip(a, b) if isinstance(a, (list, tuple)) else [(a, b)]
    return max(float((x.detach() - y.detach()).abs().max()) for x, y in pairs)


def _embedding_parity(claims, abstracts, max_length, temperature, scale, dims) -> dict:
    """Ours vs theirs on one batch of MiniLM embeddings [B, 384]: InfoNCE vs MNRL, MRL vs MRL."""
    from sentence_transformers.sentence_transformer import losses as st

    from ..losses import in_batch_info_nce
    from ..matryoshka import MatryoshkaLoss
    from ..models import load_model

    base = load_model("all-MiniLM-L6-v2")
    cols = [torch.tensor(base.encode(t, max_length=max_length, progress=False), requires_grad=True)
            for t in (claims, abstracts)]
    inner = functools.partial(in_batch_info_nce, temperature=temperature)
    adapter = _Columns(base.dim)
    mnrl = st.MultipleNegativesRankingLoss(adapter, scale=scale)
    pairs = {"info_nce_vs_mnrl": (inner(*cols).loss, mnrl([{"emb": c} for c in cols], None)),
             "matryoshka_vs_st_matryoshka": (MatryoshkaLoss(inner, list(dims))(*cols).loss,
                                             st.MatryoshkaLoss(adapter, mnrl, list(dims))([{"emb": c} for c in cols],
                                                                                          None))}
    out = {}
    for name, (ours, theirs) in pairs.items():
        g_ours = torch.autograd.grad(ours, cols)
        g_theirs = torch.autograd.grad(theirs, cols)
        out[name] = {"ours": ours.item(), "theirs": theirs.item(), "loss_gap": abs(ours.item() - theirs.item()),
                     "grad_gap": _gap(g_ours, g_theirs), "grad_max": max(float(g.abs().max()) for g in g_ours)}
    return out


def _model_parity(claims, abstracts, max_length, temperature, scale, mini_batch_size) -> dict:
    """On MiniLM itself (eval mode: no dropout), parameter gradients of MNRL vs cached MNRL vs ours."""
    from sentence_transformers.sentence_transformer import losses as st

    from ..losses import in_batch_info_nce
    from ..models import BiEncoder

    model = _st_minilm(max_length).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    features = [model.preprocess(t) for t in (claims, abstracts)]

    def grads(loss_fn) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss.item(), [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]

    ours = BiEncoder(_hf(model), model.tokenizer)       # shares the weights: same parameters, our forward
    batches = [ours.tokenize(t, max_length=max_length) for t in (claims, abstracts)]
    runs = {"mnrl": grads(lambda: st.MultipleNegativesRankingLoss(model, scale=scale)(features, None)),
            "cached_mnrl": grads(lambda: st.CachedMultipleNegativesRankingLoss(
                model, scale=scale, mini_batch_size=mini_batch_size)(features, None)),
            "ours": grads(lambda: in_batch_info_nce(*[ours(b) for b in batches], temperature=temperature).loss)}
    model.zero_grad(set_to_none=True)
    ref_loss, ref = runs["mnrl"]
    grad_max = max(float(x.abs().max()) for x in ref)
    return {f"{name}_vs_mnrl": {"loss": loss, "mnrl": ref_loss, "loss_gap": abs(loss - ref_loss),
                                "param_grad_gap": _gap(g, ref), "param_grad_max": grad_max}
            for name, (loss, g) in runs.items() if name != "mnrl"}


def loss_parity(batch_size: int = 16, max_length: int = 64, temperature: float = 0.05, scale: float | None = None,
                dims: Sequence[int] = MATRYOSHKA_DIMS, mini_batch_size: int | None = None) -> dict:
    """Our losses against sentence-transformers' on one real batch of SciFact (claim, abstract) pairs.

    1. The first ``batch_size`` labelled pairs, embedded by MiniLM ([B, 384] each, texts cut at ``max_length``
       tokens), go to our :func:`~embedlessons.losses.in_batch_info_nce` (temperature t) and to MNRL
       (``scale``, default 1/t; Henderson et al. 2017), and to our and their ``MatryoshkaLoss`` over ``dims``
       (Kusupati et al. 2022); value and gradient with respect to every embedding are compared.
    2. On MiniLM's forward itself (eval mode), MNRL, ``CachedMultipleNegativesRankingLoss`` with
       ``mini_batch_size`` rows per pass (default B // 4; GradCache, Gao et al. 2021: embed without graph, take
       the loss's gradient with respect to the embeddings, then re-embed one mini-batch at a time with the graph
       and back-propagate that cached gradient: the activations of only one mini-batch are held at a time) and
       ours: loss and the gradient of every model parameter.

    Returns a JSON-ready dict: for each comparison the two values, ``loss_gap`` and the largest absolute
    gradient difference (``grad_gap`` / ``param_grad_gap``, beside the largest gradient entry for scale).
    A ``scale`` other than 1/t gives large gaps (the check can fail).
    """
    scale = 1.0 / temperature if scale is None else float(scale)
    mini_batch_size = mini_batch_size or max(1, batch_size // 4)
    data = labelled_pairs()
    claims, abstracts = data.anchors[:batch_size], data.positives[:batch_size]
    out = {"settings": {"batch_size": len(claims), "max_length": max_length, "temperature": temperature,
                        "scale": scale, "dims": list(dims), "mini_batch_size": mini_batch_size}}
    out.update(_embedding_parity(claims, abstracts, max_length, temperature, scale, dims))
    out.update(_model_parity(claims, abstracts, max_length, temperature, scale, mini_batch_size))
    return out


# ============================================================================================== training
def _config(steps: int, batch_size: int, lr: float, max_length: int, seed: int):
    """The :class:`~embedlessons.training.TrainConfig` both trainers follow: AdamW (weight decay 0.01, none on
    biases and LayerNorm), 10% linear warm-up then linear decay to 0, gradient norm clipped at 1."""
    from ..training import TrainConfig

    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.1, max_length=max_length, seed=seed)


def _st_loss(loss: str, model, temperature: float, dims: Sequence[int], mini_batch_size: int):
    from sentence_transformers.sentence_transformer import losses as st

    if loss == "cached_mnrl":
        return st.CachedMultipleNegativesRankingLoss(model, scale=1 / temperature, mini_batch_size=mini_batch_size)
    mnrl = st.MultipleNegativesRankingLoss(model, scale=1 / temperature)
    return st.MatryoshkaLoss(model, mnrl, list(dims)) if loss == "matryoshka_mnrl" else mnrl


def _fixed_batches(batches: Sequence[Sequence[int]]):
    """A batch-sampler factory for ``SentenceTransformerTrainingArguments(batch_sampler=...)`` that yields
    the given index batches, once (to hand both trainers the same data)."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class FixedBatches(DefaultBatchSampler):
        def __iter__(self):
            return iter([list(map(int, b)) for b in batches])

        def __len__(self) -> int:
            return len(batches)

    return lambda dataset, **kwargs: FixedBatches(dataset, **kwargs)


def train_with_library(loss: str = "mnrl", seed: int = 0, steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
                       max_length: int = 64, top_layers: int | None = 3, max_rows: int | None = None,
                       temperature: float = 0.05, dims: Sequence[int] = MATRYOSHKA_DIMS,
                       mini_batch_size: int | None = None, batches: Sequence[Sequence[int]] | None = None,
                       dropout: bool = True, progress: bool = False):
    """Fine-tune all-MiniLM-L6-v2 on the labelled SciFact pairs with ``SentenceTransformerTrainer``.

    ``loss``: ``"mnrl"`` (scale 1/temperature), ``"cached_mnrl"`` (GradCache, ``mini_batch_size`` rows per
    pass, default batch_size // 4) or ``"matryoshka_mnrl"`` (MNRL at every prefix of ``dims``). Batches come
    from ``BatchSamplers.NO_DUPLICATES`` (last incomplete batch dropped, as ours), or are the given index
    ``batches``. Optimiser, schedule, clipping, seed and token limit follow :func:`_config`; only the top
    ``top_layers`` layers train (frozen with our :class:`~.part3.TrainTopLayers`: token embeddings, lower
    layers and the unused pooler). No reporting, no checkpoints; ``dropout=False`` turns dropout off.

    Returns ``(model, log)``: the trained model as our :class:`~embedlessons.models.BiEncoder` (saved by
    sentence-transformers to a temporary folder, loaded by :func:`~embedlessons.models.load_model`) and
    ``{"steps": [{"step", "loss", "grad_norm"}], "train_seconds"}``.
    """
    _choice(loss, ST_LOSSES, "sentence-transformers loss")
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import PrinterCallback

    from ..models import _quiet_loading, load_model

    data, config = labelled_pairs(max_rows), _config(steps, batch_size, lr, max_length, seed)
    model = _st_minilm(max_length, dropout)
    freeze = TrainTopLayers(top_layers) if top_layers else None
    with global_rng_kept(), tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
            optim="adamw_torch", weight_decay=config.weight_decay, lr_scheduler_type="linear",
            warmup_steps=config.warmup_steps, max_grad_norm=config.max_grad_norm, seed=seed, use_cpu=True,
            batch_sampler=BatchSamplers.NO_DUPLICATES if batches is None else _fixed_batches(batches),
            dataloader_drop_last=True, report_to="none", save_strategy="no", logging_steps=1,
            disable_tqdm=not progress)
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict({"anchor": data.anchors,
                                                                     "positive": data.positives}),
            loss=_st_loss(loss, model, temperature, dims, mini_batch_size or max(1, batch_size // 4)))
        trainer.remove_callback(PrinterCallback)
        if freeze:
            freeze.on_train_begin(SimpleNamespace(model=SimpleNamespace(transformer=_hf(model))))
        started = time.perf_counter()
        trainer.train()
        seconds = round(time.perf_counter() - started, 3)
        if freeze:
            freeze.on_train_end(None)
        with _quiet_loading():
            model.save(str(Path(tmp) / "model"))
        trained = load_model(Path(tmp) / "model")
    log = [{"step": r["step"], "loss": float(r["loss"]), "grad_norm": r.get("grad_norm")}
           for r in trainer.state.log_history if "loss" in r]
    return trained, {"steps": log, "train_seconds": seconds}


def train_ours(loss: str = "info_nce", seed: int = 0, steps: int = 60, batch_size: int = 32, lr: float = 5e-5,
               max_length: int = 64, top_layers: int | None = 3, max_rows: int | None = None,
               temperature: float = 0.05, dims: Sequence[int] = MATRYOSHKA_DIMS, dropout: bool = True,
               callbacks: Sequence = (), cache: bool = False, progress: bool = False):
    """The same fine-tune with our :func:`~embedlessons.training.train` (:class:`~embedlessons.training.
    NoDuplicatesBatchSampler`, :class:`~.part3.TrainTopLayers`, :func:`_config`).

    ``loss``: ``"info_nce"`` (:func:`~embedlessons.losses.in_batch_info_nce` at ``temperature``) or
    ``"matryoshka_info_nce"`` (:class:`~embedlessons.matryoshka.MatryoshkaLoss` over ``dims``).
    ``callbacks`` run after the freezing. Returns ``(model, history)``: the trained
    :class:`~embedlessons.models.BiEncoder` and its :class:`~embedlessons.training.TrainHistory`.
    """
    _choice(loss, OUR_LOSSES, "loss of ours")
    from ..losses import in_batch_info_nce
    from ..matryoshka import MatryoshkaLoss
    from ..models import load_model
    from ..training import train

    inner = functools.partial(in_batch_info_nce, temperature=temperature)
    model = load_model("all-MiniLM-L6-v2")
    if not dropout:
        _no_dropout(model)
    freeze = [TrainTopLayers(top_layers)] if top_layers else []
    history = train(model, labelled_pairs(max_rows), MatryoshkaLoss(inner, list(dims)) if loss != "info_nce" else inner,
                    _config(steps, batch_size, lr, max_length, seed), callbacks=[*freeze, *callbacks], cache=cache,
                    progress=progress)
    return model, history


class _DataLoaderSeedDraw:
    """Callback: the one draw from torch's global generator that a DataLoader iterator makes when it starts (its
    workers' base seed, ``torch.utils.data.dataloader._BaseDataLoaderIter``); our trainer has no DataLoader."""

    def on_train_begin(self, state) -> None:
        torch.empty((), dtype=torch.int64).random_()


def trainer_parity(steps: int = 3, batch_size: int = 8, max_length: int = 32, seed: int = 0,
                   top_layers: int | None = 3, max_rows: int | None = 64, lr: float = 5e-5,
                   temperature: float = 0.05, dropout: bool = True) -> dict:
    """Both trainers on the *same* batches (our sampler's first ``steps``, one epoch): in-batch InfoNCE vs MNRL.

    With ``dropout`` on, ours first makes the one draw the Hugging Face trainer's DataLoader makes from torch's
    global generator (:class:`_DataLoaderSeedDraw`), so both draw the same dropout masks; ``dropout=False``
    turns dropout off instead. Then only floating-point rounding separates the runs: this checks that optimiser,
    weight decay, schedule, clipping, freezing and dropout match. Returns the per-step loss and gradient-norm
    gaps, the largest absolute difference of any weight (``weight_gap``; ``weight_change``: the largest update,
    for scale) and ``update_gap``, the norm of the difference of the two updates over the norm of ours.
    """
    import itertools

    from ..models import load_model
    from ..training import NoDuplicatesBatchSampler, _batches

    batches = list(itertools.islice(_batches(NoDuplicatesBatchSampler(labelled_pairs(max_rows), batch_size,
                                                                       seed=seed)), steps))
    common = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, top_layers=top_layers,
                  max_rows=max_rows, temperature=temperature, dropout=dropout)
    ours, history = train_ours("info_nce", callbacks=[_DataLoaderSeedDraw()] if dropout else [], **common)
    theirs, log = train_with_library("mnrl", batches=batches, **common)
    base = load_model("all-MiniLM-L6-v2").transformer.state_dict()
    a, b = ours.transformer.state_dict(), theirs.transformer.state_dict()
    norm = lambda d: float(torch.sqrt(sum((v.double() ** 2).sum() for v in d)))        # noqa: E731
    return {"settings": {k: v for k, v in common.items()},
            "loss_gap": max(abs(x - y["loss"]) for x, y in zip(history.losses, log["steps"])),
            "grad_norm_gap": max(abs(x["grad_norm"] - y["grad_norm"]) for x, y in zip(history.steps, log["steps"])),
            "weight_gap": max(float((a[k] - b[k]).abs().max()) for k in a),
            "weight_change": max(float((a[k] - base[k]).abs().max()) for k in a),
            "update_gap": norm([a[k] - b[k] for k in a]) / norm([a[k] - base[k] for k in a]),
            "losses": {"ours": history.losses, "theirs": [r["loss"] for r in log["steps"]]}}


# ============================================================================================== comparison
def _score(model, test, query_max_length: int, doc_max_length: int, eval_dims: Sequence[int]) -> tuple[dict, dict]:
    """NDCG@10 (MRR@10, Recall@100) of every test claim as section 5.2 scores it, at the full width and at each
    of ``eval_dims`` (prefixes re-normalised, :func:`~embedlessons.matryoshka.truncate`).
    Returns ``(metrics, per_query)``; per_query maps ``""`` / ``"/dim<m>"`` to {claim id: NDCG@10}."""
    from ..matryoshka import truncate

    enc = functools.partial(model.encode, progress=False)
    q = enc(list(test.queries.values()), max_length=query_max_length)
    d = enc(test.doc_texts(), max_length=doc_max_length)
    run = dense_run(q, d, test, top_k=100)
    per_query = {"": ndcg_at_k(test.qrels, run, k=10, per_query=True)}
    metrics = {"mrr@10": mrr_at_k(test.qrels, run, k=10), "recall@100": recall_at_k(test.qrels, run, k=100)}
    for m in eval_dims:
        per_query[f"/dim{m}"] = ndcg_at_k(test.qrels, dense_run(truncate(q, m), truncate(d, m), test, top_k=100),
                                          k=10, per_query=True)
    for key, items in per_query.items():
        metrics[f"ndcg@10{key.replace('/', '@')}"] = float(np.mean(list(items.values())))
    return metrics, {k: {c: float(v) for c, v in items.items()} for k, items in per_query.items()}


def _train_arm(arm: str, seed: int, **settings):
    """One arm of :data:`ARMS`: ``(model, per-step losses, train seconds)``."""
    trainer, loss = ARMS[arm]
    if trainer == "ours":
        settings.pop("mini_batch_size")
        model, history = train_ours(loss, seed=seed, **settings)
        return model, history.losses, history.meta["train_seconds"]
    model, log = train_with_library(loss, seed=seed, **settings)
    return model, [r["loss"] for r in log["steps"]], log["train_seconds"]


def library_comparison(arms: Sequence[str] = tuple(ARMS), seeds: Sequence[int] = (0, 1, 2), steps: int = 60,
                       batch_size: int = 32, lr: float = 5e-5, max_length: int = 64, top_layers: int | None = 3,
                       scifact_distractors: int | None = 217, max_rows: int | None = None, temperature: float = 0.05,
                       dims: Sequence[int] = MATRYOSHKA_DIMS, eval_dims: Sequence[int] = (64,),
                       mini_batch_size: int | None = None, query_max_length: int = 64, doc_max_length: int = 128,
                       progress: bool = True) -> dict:
    """Every arm of :data:`ARMS` with every seed, scored on SciFact test (the recorded experiment).

    Same data (:func:`labelled_pairs`), steps, batch size, lr, token limit, frozen layers and seed for every
    arm; scored as section 5.2 scores (:func:`~.part3.evaluation_subset` of ``scifact_distractors``, claims cut
    at ``query_max_length`` tokens, abstracts at ``doc_max_length``), at the full width and at each prefix
    length of ``eval_dims``. Returns a JSON-ready dict: ``settings``; ``summary[arm][str(seed)]`` (NDCG@10,
    ``ndcg@10@dim<m>``, MRR@10, Recall@100, ``final_loss`` (mean of the last 10 steps), ``train_seconds``);
    ``per_query["<arm>/seed<s>"]`` and ``["<arm>/seed<s>/dim<m>"]`` (claim id -> NDCG@10); ``losses`` (per step);
    ``parity`` (:func:`loss_parity` on a batch of this size), ``trainer_parity`` (:func:`trainer_parity`,
    small), ``differences`` (:data:`UNAVOIDABLE_DIFFERENCES`) and ``data``.
    """
    for arm in arms:
        _choice(arm, ARMS, "arm")
    mini_batch_size = mini_batch_size or max(1, batch_size // 4)
    config = _config(steps, batch_size, lr, max_length, seeds[0])
    settings = dict(arms=list(arms), seeds=list(seeds), steps=steps, batch_size=batch_size, lr=lr,
                    max_length=max_length, top_layers=top_layers, scifact_distractors=scifact_distractors,
                    max_rows=max_rows, temperature=temperature, dims=list(dims), eval_dims=list(eval_dims),
                    mini_batch_size=mini_batch_size, query_max_length=query_max_length, doc_max_length=doc_max_length,
                    warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
                    max_grad_norm=config.max_grad_norm)
    test, data = evaluation_subset(scifact_distractors), labelled_pairs(max_rows)
    out = {"settings": settings, "summary": {}, "per_query": {}, "losses": {},
           "parity": loss_parity(batch_size, max_length, temperature, dims=dims, mini_batch_size=mini_batch_size),
           "trainer_parity": trainer_parity(min(3, steps), min(8, batch_size), min(32, max_length), seeds[0],
                                            top_layers, min(64, max_rows or 64), lr, temperature),
           "differences": list(UNAVOIDABLE_DIFFERENCES),
           "data": {"claims": len(test.queries), "abstracts": len(test.corpus), "training_pairs": len(data),
                    "example": [data.anchors[0], data.positives[0]]}}
    train_settings = dict(steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, top_layers=top_layers,
                          max_rows=max_rows, temperature=temperature, dims=dims, mini_batch_size=mini_batch_size)
    for arm in arms:
        for seed in seeds:
            model, losses, seconds = _train_arm(arm, seed, **train_settings)
            metrics, per_query = _score(model, test, query_max_length, doc_max_length, eval_dims)
            out["summary"].setdefault(arm, {})[str(seed)] = {**metrics, "final_loss": float(np.mean(losses[-10:])),
                                                              "train_seconds": seconds}
            out["per_query"].update({f"{arm}/seed{seed}{key}": items for key, items in per_query.items()})
            out["losses"][f"{arm}/seed{seed}"] = [float(v) for v in losses]
            if progress:
                print(arm, seed, {k: round(v, 4) for k, v in out["summary"][arm][str(seed)].items()}, flush=True)
    return out


def compare_arms(result: Mapping, a: str, b: str, dim: int | None = None, n_resamples: int = 10_000,
                 seed: int = 0) -> dict[str, float]:
    """Paired difference of NDCG@10, arm ``a`` minus arm ``b``, over the test claims, each claim's score averaged
    over the seeds first (:func:`~.part5.compare_sources`, :func:`~.part3.paired_test`: ``diff``, ``ci_low``,
    ``ci_high``, ``p``); ``dim``: the scores at that prefix length (``per_query["<arm>/seed<s>/dim<m>"]``)."""
    for arm in (a, b):
        if arm not in result["summary"]:
            raise ValueError(f"arm {arm!r} is not in this result; it has {list(result['summary'])}")
    if dim is None:
        return compare_sources(result, a, b, n_resamples, seed)
    view = {"summary": result["summary"], "per_query": {}}
    for arm in (a, b):
        for s in result["summary"][arm]:
            key = f"{arm}/seed{s}/dim{dim}"
            if key not in result["per_query"]:
                raise ValueError(f"no scores at dim {dim} for {arm} seed {s} (per_query has no {key!r})")
            view["per_query"][f"{arm}/seed{s}"] = result["per_query"][key]
    return compare_sources(view, a, b, n_resamples, seed)
