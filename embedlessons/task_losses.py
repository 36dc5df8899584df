"""Losses for labelled texts: classification against label prototypes, and the centre loss for clustering.

Part 4 trains one encoder on several tasks (:mod:`embedlessons.multitask`). Retrieval, STS and NLI use the
pair losses of :mod:`embedlessons.losses`; texts with a class label use one of these:

==================================  =====================================  ===================================
loss                                what it asks of the embedding          state
==================================  =====================================  ===================================
:class:`PrototypeLoss`              be closest (cosine / t) to the         one learnable vector per class
                                    prototype of its own class
:class:`CenterLoss`                 be near the running mean of its class  class centres (a buffer, updated
                                    (+ the prototype term, so the classes  by the paper's rule, not the
                                    stay apart)                            optimiser)
``losses.supervised_contrastive``   be closer to the same-label texts      none (in-batch)
                                    of the batch than to the others
==================================  =====================================  ===================================

Labels reach a loss as a float tensor [B] (the trainer passes a dataset's last field as ``scores``); they are
checked to be whole numbers in ``[0, n_classes)``. Functional forms (:func:`prototype_loss`,
:func:`center_loss`) take every tensor as an argument, so ``torch.autograd.gradcheck`` can test them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import LearnableTemperature, LossOutput, _check, _positive

__all__ = ["class_labels", "prototype_loss", "PrototypeLoss", "center_loss", "update_centers", "CenterLoss",
           "class_means"]


def class_labels(labels: Tensor, n_classes: int) -> Tensor:
    """Labels [B] (int, or float holding whole numbers) as int64, each checked to lie in ``[0, n_classes)``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape [B] (rank 1), got {tuple(labels.shape)}")
    if labels.is_floating_point():
        if not torch.isfinite(labels).all() or (labels != labels.round()).any():
            raise ValueError("labels must be whole numbers (class indices), got non-integer values")
    y = labels.long()
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}) for {n_classes} classes, got "
                         f"{y.min().item()}..{y.max().item()}")
    return y


def _check_classes(vectors: Tensor, name: str, width: int) -> None:
    if not isinstance(vectors, Tensor) or vectors.dim() != 2:
        shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise ValueError(f"{name} must be a tensor of shape [C, d], got {shape}")
    if vectors.shape[1] != width:
        raise ValueError(f"{name} have d={vectors.shape[1]} but the embeddings have d={width}")
    if len(vectors) < 2:
        raise ValueError(f"{name} need at least 2 classes, got {len(vectors)}")


def _prefix(vectors: Tensor, embeddings: Tensor) -> Tensor:
    """The first d coordinates of class vectors [C, D] for embeddings of width d <= D, in their dtype."""
    if isinstance(embeddings, Tensor) and embeddings.dim() == 2 and embeddings.shape[1] < vectors.shape[1]:
        vectors = vectors[:, :embeddings.shape[1]]
    return vectors.to(embeddings.dtype) if isinstance(embeddings, Tensor) else vectors


def _class_stats(sims: Tensor, y: Tensor) -> dict[str, float]:
    """accuracy (nearest class vector), pos_sim (cosine to the own class), neg_sim (to the others)."""
    with torch.no_grad():
        own = torch.zeros_like(sims, dtype=torch.bool)
        own[torch.arange(len(y), device=sims.device), y.to(sims.device)] = True
        return {"accuracy": (sims.argmax(1) == y).float().mean().item(), "pos_sim": sims[own].mean().item(),
                "neg_sim": sims[~own].mean().item()}


# ----------------------------------------------------------------------------------------------- prototypes
def prototype_loss(embeddings: Tensor, labels: Tensor, prototypes: Tensor,
                   temperature: float | Tensor = 0.05) -> LossOutput:
    """Cross-entropy over cosine similarities to one prototype per class, divided by a temperature.

    ``logits[i, c] = cos(x_i, p_c) / t``; ``loss = mean_i -log softmax(logits_i)[y_i]``. Both the embeddings
    and the prototypes are L2-normalised, so only directions matter; t sets how peaked the softmax is.

    Args:
        embeddings: [B, d].
        labels: [B] class indices in ``[0, C)`` (int, or float holding whole numbers).
        prototypes: [C, d], C >= 2.
        temperature: t > 0, float or 0-dim tensor.

    References:
        Wang et al. (2017), NormFace (a softmax over normalised features and class weights, with a scale
        1/t); Movshovitz-Attias et al. (2017), No Fuss Distance Metric Learning Using Proxies (one learned
        proxy per class instead of in-batch pairs).

    Inputs:
        single texts with an integer label.

    Relations:
        ``supervised_contrastive`` (:mod:`embedlessons.losses`) compares each text with the same-label texts
        *of the batch*; this compares it with a vector per class that persists across batches, so it needs
        no positives in the batch and its cost does not grow with B. The stats are those of a nearest-
        prototype classifier.

    Example:
        >>> x, y, p = torch.randn(4, 8), torch.tensor([0, 1, 2, 1]), torch.randn(3, 8)
        >>> prototype_loss(x, y, p, temperature=0.05).stats["accuracy"]  # doctest: +SKIP
    """
    _check(embeddings=(embeddings, 2))
    _check_classes(prototypes, "prototypes", embeddings.shape[1])
    y = class_labels(labels, len(prototypes))
    if len(y) != len(embeddings):
        raise ValueError(f"batch sizes differ: embeddings has {len(embeddings)} rows, labels has {len(y)}")
    t = _positive(temperature, "temperature")
    sims = F.normalize(embeddings, dim=-1) @ F.normalize(prototypes, dim=-1).T      # [B, C]
    loss = F.cross_entropy(sims / t, y.to(sims.device))
    return LossOutput(loss, _class_stats(sims, y.to(sims.device)))


def class_means(embeddings: Tensor, labels: Tensor, n_classes: int, normalize: bool = True) -> Tensor:
    """Mean embedding of each class [C, d] (of the L2-normalised embeddings when ``normalize``); every class
    must occur. Used to start prototypes or centres where the encoder already puts each class."""
    _check(embeddings=(embeddings, 2))
    y = class_labels(labels, n_classes)
    if len(y) != len(embeddings):
        raise ValueError(f"batch sizes differ: embeddings has {len(embeddings)} rows, labels has {len(y)}")
    missing = sorted(set(range(n_classes)) - set(y.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no embedding; every class needs at least one")
    x = F.normalize(embeddings, dim=-1) if normalize else embeddings
    sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y.to(x.device), x)
    return sums / torch.bincount(y, minlength=n_classes).to(x)[:, None]


class PrototypeLoss(nn.Module):
    """Classification with one learnable prototype per label and a temperature (:func:`prototype_loss`).

    The prototypes are parameters of the loss; :func:`~embedlessons.training.train` trains the parameters of
    an ``nn.Module`` loss with the model (same learning rate, no weight decay on a learnable temperature).

    Args:
        n_classes: C >= 2.
        dim: embedding width d.
        temperature: initial (or fixed) t > 0.
        learn_temperature: make t a :class:`~embedlessons.losses.LearnableTemperature` (clamped to [0.01, 1]).
        init: [C, d] starting prototypes (e.g. :func:`class_means` of the encoder's embeddings of the
            training texts); default: random directions, seeded by ``seed``.
        seed: seeds the random prototypes.

    Embeddings narrower than ``dim`` (a :class:`~embedlessons.matryoshka.MatryoshkaLoss` prefix of width m) are
    compared with the first m coordinates of each prototype: nested prototypes, as MRL's weight-tied
    classifier (MRL-E, Kusupati et al. 2022) uses the first m columns of one weight matrix.

    Example:
        >>> loss = PrototypeLoss(n_classes=4, dim=384, temperature=0.05)
        >>> out = loss(torch.randn(8, 384), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3.0]))  # doctest: +SKIP
    """

    def __init__(self, n_classes: int, dim: int, temperature: float = 0.05, learn_temperature: bool = False,
                 init: Tensor | None = None, seed: int = 0):
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        _positive(temperature, "temperature")
        if init is None:
            init = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)
        elif not isinstance(init, Tensor) or tuple(init.shape) != (n_classes, dim):
            shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"init must be a tensor of shape [{n_classes}, {dim}], got {shape}")
        self.n_classes, self.dim = n_classes, dim
        self.prototypes = nn.Parameter(init.detach().clone().float())
        self.temperature = LearnableTemperature(temperature) if learn_temperature else float(temperature)

    def _t(self) -> float | Tensor:
        return self.temperature() if isinstance(self.temperature, nn.Module) else self.temperature

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        out = prototype_loss(embeddings, labels, _prefix(self.prototypes, embeddings), self._t())
        out.stats["temperature"] = self.current_temperature
        return out

    @property
    def current_temperature(self) -> float:
        t = self._t()
        return float(t.detach()) if isinstance(t, Tensor) else t

    @torch.no_grad()
    def predict(self, embeddings: Tensor) -> Tensor:
        """Nearest prototype by cosine: class indices [B]."""
        return (F.normalize(embeddings, dim=-1) @ F.normalize(self.prototypes, dim=-1).T).argmax(1)

    def extra_repr(self) -> str:
        learn = isinstance(self.temperature, nn.Module)
        return f"n_classes={self.n_classes}, dim={self.dim}, temperature={self.current_temperature:g}, learn={learn}"


# ----------------------------------------------------------------------------------------------- centres
def center_loss(embeddings: Tensor, labels: Tensor, centers: Tensor, normalize: bool = True) -> LossOutput:
    """The centre loss (Wen et al. 2016): half the mean squared distance of each embedding to its class centre.

    ``loss = 1/(2B) * sum_i ||x_i - c_{y_i}||^2`` with ``x`` L2-normalised when ``normalize`` (then each term
    is at most 2 once the centres lie in the unit ball). The paper sums over the batch; the mean keeps the
    scale independent of B. The centres get a gradient here too, but :class:`CenterLoss` moves them with the
    paper's update rule (:func:`update_centers`) instead.

    Args:
        embeddings: [B, d].
        labels: [B] class indices in ``[0, C)``.
        centers: [C, d].
        normalize: L2-normalise the embeddings first (not the centres: a centre is a mean of unit vectors).

    References:
        Wen, Zhang, Li, Qiao (2016), A Discriminative Feature Learning Approach for Deep Face Recognition,
        the centre loss and its mini-batch centre update (their Algorithm 1).

    Inputs:
        single texts with an integer label.

    Relations:
        On its own it has a trivial minimum (every text and every centre at one point); the paper always
        pairs it with a softmax term, as :class:`CenterLoss` does with :func:`prototype_loss`. Stats: nearest-
        centre accuracy and cosines to the own / other centres.

    Example:
        >>> center_loss(torch.randn(4, 8), torch.tensor([0, 1, 1, 0]), torch.zeros(2, 8)).loss  # doctest: +SKIP
    """
    _check(embeddings=(embeddings, 2))
    _check_classes(centers, "centers", embeddings.shape[1])
    y = class_labels(labels, len(centers))
    if len(y) != len(embeddings):
        raise ValueError(f"batch sizes differ: embeddings has {len(embeddings)} rows, labels has {len(y)}")
    x = F.normalize(embeddings, dim=-1) if normalize else embeddings
    y = y.to(x.device)
    loss = 0.5 * (x - centers[y]).pow(2).sum(-1).mean()
    with torch.no_grad():
        sims = F.normalize(x, dim=-1) @ F.normalize(centers, dim=-1).T
    return LossOutput(loss, _class_stats(sims, y))


@torch.no_grad()
def update_centers(centers: Tensor, embeddings: Tensor, labels: Tensor, alpha: float = 0.5) -> Tensor:
    """One step of Wen et al.'s mini-batch centre update, in place; returns ``centers``.

    ``delta_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)`` and ``c_j <- c_j - alpha * delta_j``, where n_j is
    the number of texts of class j in the batch (classes absent from the batch do not move). ``embeddings``
    must already be as the loss sees them (normalised or not).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    y = class_labels(labels, len(centers)).to(centers.device)
    x = embeddings.detach().to(centers.dtype)
    counts = torch.bincount(y, minlength=len(centers)).to(centers.dtype)
    sums = torch.zeros_like(centers).index_add_(0, y, x)
    delta = (counts[:, None] * centers - sums) / (1 + counts[:, None])
    centers -= alpha * delta
    return centers


class CenterLoss(nn.Module):
    """Joint supervision of Wen et al. (2016): a classification term plus ``center_weight`` x the centre loss.

    ``loss = prototype_loss(x, y, prototypes, t) + center_weight * center_loss(x, y, centers)``. The
    prototypes are learnable (as in :class:`PrototypeLoss`); the centres are a buffer moved after each
    training call by :func:`update_centers` with rate ``alpha`` (the paper's Algorithm 1), not by the
    optimiser. ``loss.eval()`` stops the updates. The centres start at zero, or at ``init_centers``. Embeddings
    narrower than ``dim`` (Matryoshka prefixes) use the first coordinates of prototypes and centres, and only
    full-width calls move the centres.

    Args:
        n_classes, dim: C >= 2 classes of d-dim embeddings.
        center_weight: lambda >= 0 (0: only the classification term).
        alpha: centre update rate in (0, 1] (the paper: 0.5).
        temperature: t > 0 of the classification term.
        classify: include the classification term; False leaves the centre loss alone (which collapses:
            kept for demonstrating why the paper needs the softmax term).
        init_prototypes, init_centers: [C, d] starting values (e.g. :func:`class_means`).
        seed: seeds the random prototypes.

    Stats: ``center`` (the centre term), ``classify`` (the classification term), and nearest-prototype
    ``accuracy`` / ``pos_sim`` / ``neg_sim`` (nearest-centre ones when ``classify=False``).
    """

    def __init__(self, n_classes: int, dim: int, center_weight: float = 1.0, alpha: float = 0.5,
                 temperature: float = 0.05, classify: bool = True, init_prototypes: Tensor | None = None,
                 init_centers: Tensor | None = None, seed: int = 0):
        super().__init__()
        if not (math.isfinite(center_weight) and center_weight >= 0):
            raise ValueError(f"center_weight must be a finite number >= 0, got {center_weight}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not classify and center_weight == 0:
            raise ValueError("with classify=False and center_weight=0 there is no loss left")
        self.classifier = PrototypeLoss(n_classes, dim, temperature, init=init_prototypes, seed=seed) \
            if classify else None
        if init_centers is None:
            init_centers = torch.zeros(n_classes, dim)
        elif not isinstance(init_centers, Tensor) or tuple(init_centers.shape) != (n_classes, dim):
            raise ValueError(f"init_centers must be a tensor of shape [{n_classes}, {dim}]")
        self.register_buffer("centers", init_centers.detach().clone().float())
        self.n_classes, self.dim = n_classes, dim
        self.center_weight, self.alpha = float(center_weight), float(alpha)

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        centre = center_loss(embeddings, labels, _prefix(self.centers, embeddings).clone())     # updated below
        if self.classifier is not None:
            cls = self.classifier(embeddings, labels)
            loss, stats = cls.loss + self.center_weight * centre.loss, dict(cls.stats)
            stats["classify"] = cls.loss.item()
        else:
            loss, stats = self.center_weight * centre.loss, dict(centre.stats)
        stats["center"] = centre.loss.item()
        if self.training and torch.is_grad_enabled() and embeddings.shape[1] == self.dim:
            update_centers(self.centers, F.normalize(embeddings.detach(), dim=-1), labels, self.alpha)
        return LossOutput(loss, stats)

    def extra_repr(self) -> str:
        return (f"n_classes={self.n_classes}, dim={self.dim}, center_weight={self.center_weight:g}, "
                f"alpha={self.alpha:g}, classify={self.classifier is not None}")
