"""Contrastive losses. Each takes embeddings (and scores where needed) and returns a :class:`LossOutput`.

Part 1 uses :func:`supervised_contrastive` to fine-tune MiniLM on topic labels (section 1.3).
Part 2 adds InfoNCE and its relatives:

===========================  ============================================  ==============================
loss                         inputs                                        sentence-transformers analogue
===========================  ============================================  ==============================
:func:`info_nce`             anchor, positive, K explicit negatives        (MNRL with only own negatives)
:func:`in_batch_info_nce`    anchor, positive [, hard negatives]           MultipleNegativesRankingLoss,
                                                                           ...SymmetricRankingLoss
:func:`triplet_loss`         anchor, positive, negative                    TripletLoss
:func:`simcse_loss`          two dropout views of the same texts           MNRL on (text, text) pairs
:func:`cosent_loss`          two texts and a graded score                  CoSENTLoss
:func:`angle_loss`           two texts and a graded score                  AnglELoss
:func:`mse_cosine_loss`      two texts and a score in [-1, 1]              CosineSimilarityLoss
===========================  ============================================  ==============================

Part 4 adds task losses for classification and clustering (:mod:`embedlessons.task_losses`) and the
Matryoshka wrapper (:mod:`embedlessons.matryoshka`), which work on any loss here.

``temperature`` may be a float or a 0-dim tensor (e.g. ``LearnableTemperature()()``); sentence-transformers
calls its inverse ``scale`` (``scale = 1 / temperature``, so 0.05 <-> 20). Embeddings are L2-normalised
inside every loss that uses cosine similarity. Bad input raises ``ValueError`` saying what was expected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LossOutput", "info_nce", "in_batch_info_nce", "triplet_loss", "simcse_loss", "cosent_loss",
           "angle_similarity", "angle_loss", "mse_cosine_loss", "LearnableTemperature", "supervised_contrastive"]


@dataclass
class LossOutput:
    """A scalar, differentiable ``loss`` and plain-float ``stats`` for logging.

    ``stats`` has at least ``accuracy`` (top-1 of the positive among the candidates, or the fraction of
    correctly ordered pairs), ``pos_sim`` and ``neg_sim`` (mean cosines).
    """

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- checks
def _check(**named: tuple[Tensor, int]) -> None:
    """Each value is ``(tensor, expected_rank)``; all share the batch size (dim 0) and width (last dim)."""
    batch = width = None
    for name, (x, rank) in named.items():
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != rank:
            shape = "[B, d]" if rank == 2 else "[B, K, d]" if rank == 3 else "[B]"
            raise ValueError(f"{name} must have shape {shape} (rank {rank}), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected at least one row and column")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if batch is None:
            batch, width, first = x.shape[0], x.shape[-1], name
        elif x.shape[0] != batch:
            raise ValueError(f"batch sizes differ: {first} has {batch} rows, {name} has {x.shape[0]}")
        elif rank > 1 and x.shape[-1] != width:
            raise ValueError(f"embedding dims differ: {first} has d={width}, {name} has d={x.shape[-1]}")


def _positive(value: float | Tensor, name: str) -> float | Tensor:
    """A float or 0-dim tensor that is finite and > 0 (temperature, scale)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a float or a 0-dim tensor, got shape {tuple(value.shape)}")
        value = value.reshape(())
    v = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return value


def _stats(logits: Tensor, labels: Tensor, pos: Tensor, neg: Tensor, **extra: float) -> dict[str, float]:
    with torch.no_grad():
        acc = (logits.argmax(1) == labels).float().mean()
        return {"accuracy": acc.item(), "pos_sim": pos.mean().item(), "neg_sim": neg.mean().item(), **extra}


# ----------------------------------------------------------------------------------------------- InfoNCE
def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float | Tensor = 0.05) -> LossOutput:
    """InfoNCE with explicit negatives (Oord et al. 2018, "CPC"): a (K+1)-way classification per anchor.

    Row i scores its positive and its own K negatives by cosine / temperature and takes the cross-entropy
    with the positive at index 0:
    ``loss_i = -log( exp(s(a_i,p_i)/t) / (exp(s(a_i,p_i)/t) + sum_k exp(s(a_i,n_ik)/t)) )``, averaged over i.
    Other rows' positives are *not* candidates (that is :func:`in_batch_info_nce`).

    Args:
        anchor: [B, d] anchors (queries).
        positive: [B, d] the matching text of each anchor.
        negatives: [B, K, d] K negatives per anchor (K >= 1).
        temperature: t > 0, float or 0-dim tensor. Smaller t sharpens the softmax.

    References:
        Oord, Li, Vinyals (2018), Representation Learning with Contrastive Predictive Coding, Eq. 4:
        I(x; c) >= log(K+1) - loss, so the loss at chance is log(K+1).

    Inputs:
        (anchor, positive, negative_1..K) tuples, no labels.

    Relations:
        Equals ``F.cross_entropy`` over the K+1 candidate logits with target 0. With the other rows'
        positives added as candidates it becomes :func:`in_batch_info_nce` (MNRL).

    Example:
        >>> a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3, 8)
        >>> out = info_nce(a, p, n, temperature=0.05)
        >>> out.loss.backward() if out.loss.requires_grad else None
    """
    _check(anchor=(anchor, 2), positive=(positive, 2), negatives=(negatives, 3))
    t = _positive(temperature, "temperature")
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, negatives))
    pos = (a * p).sum(-1, keepdim=True)                     # [B, 1]
    neg = torch.einsum("bd,bkd->bk", a, n)                  # [B, K]
    logits = torch.cat([pos, neg], dim=1) / t               # [B, K+1], positive in column 0
    labels = torch.zeros(len(a), dtype=torch.long, device=a.device)
    return LossOutput(F.cross_entropy(logits, labels), _stats(logits, labels, pos, neg))


def in_batch_info_nce(anchor: Tensor, positive: Tensor, hard_negatives: Tensor | None = None,
                      temperature: float | Tensor = 0.05, symmetric: bool = False) -> LossOutput:
    """InfoNCE with in-batch negatives: every other row's positive is a negative for this anchor.

    Builds the [B, B(+B*K)] matrix of cosines between anchors and all candidates (the B positives, then
    any hard negatives of *all* rows), divides by t and takes the cross-entropy with target i for row i.
    ``symmetric=True`` averages this with the reverse direction, positive -> anchors (B candidates;
    hard negatives are not used there), as in CLIP and MultipleNegativesSymmetricRankingLoss.

    Args:
        anchor: [B, d].
        positive: [B, d]; row i is the positive of anchor i, and a negative for every other anchor.
        hard_negatives: None, [B, d] or [B, K, d]; extra candidate columns shared by all anchors.
        temperature: t > 0, float or 0-dim tensor (sentence-transformers' ``scale = 1 / t``).
        symmetric: also classify the anchor from the positive, and average the two losses.

    References:
        Henderson et al. (2017), Efficient Natural Language Response Suggestion for Smart Reply;
        Chen et al. (2020), SimCLR (NT-Xent); Reimers & Gurevych (2019), Sentence-BERT;
        Radford et al. (2021), CLIP (symmetric form).

    Inputs:
        (anchor, positive) pairs or (anchor, positive, negative_1..K) tuples, no labels.

    Relations:
        Equals sentence-transformers' ``MultipleNegativesRankingLoss(scale=1/t)`` (value and gradients);
        ``symmetric=True`` equals ``MultipleNegativesSymmetricRankingLoss``. Duplicate texts in a batch are
        false negatives (use a no-duplicates batch sampler).

    Example:
        >>> a, p = torch.randn(4, 8), torch.randn(4, 8)
        >>> in_batch_info_nce(a, p, temperature=0.05, symmetric=True).stats["accuracy"]  # doctest: +SKIP
    """
    if hard_negatives is not None and hard_negatives.dim() == 2:
        hard_negatives = hard_negatives.unsqueeze(1)        # [B, d] -> [B, 1, d]
    tensors = {"anchor": (anchor, 2), "positive": (positive, 2)}
    if hard_negatives is not None:
        tensors["hard_negatives"] = (hard_negatives, 3)
    _check(**tensors)
    t = _positive(temperature, "temperature")
    a, p = F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1)
    cands = p if hard_negatives is None else torch.cat(
        [p, F.normalize(hard_negatives, dim=-1).transpose(0, 1).reshape(-1, p.shape[-1])])
    sims = a @ cands.T                                      # [B, B + B*K]
    labels = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(sims / t, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(p @ a.T / t, labels)) / 2
    off_target = torch.ones_like(sims, dtype=torch.bool)
    off_target[labels, labels] = False
    return LossOutput(loss, _stats(sims, labels, sims[labels, labels], sims[off_target]))


def simcse_loss(view1: Tensor, view2: Tensor, temperature: float | Tensor = 0.05) -> LossOutput:
    """Unsupervised SimCSE (Gao et al. 2021): the same texts encoded twice with dropout are the positives.

    Args:
        view1: [B, d] first forward pass of B texts (dropout on, i.e. ``model.train()``).
        view2: [B, d] second forward pass of the *same* texts; different dropout masks.
        temperature: t > 0 (SimCSE uses 0.05).

    References:
        Gao, Yao, Chen (2021), SimCSE: Simple Contrastive Learning of Sentence Embeddings, Eq. 4.

    Inputs:
        single texts, each fed twice; no labels.

    Relations:
        It is :func:`in_batch_info_nce` (one-way) applied to two dropout views; in sentence-transformers,
        MultipleNegativesRankingLoss on (text, text) pairs. Dropout is the only "augmentation".

    Example:
        >>> x = torch.randn(4, 8)
        >>> simcse_loss(x + 0.01 * torch.randn(4, 8), x + 0.01 * torch.randn(4, 8)).loss  # doctest: +SKIP
    """
    _check(view1=(view1, 2), view2=(view2, 2))
    return in_batch_info_nce(view1, view2, temperature=temperature)


# ----------------------------------------------------------------------------------------------- triplet
def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.5,
                 distance: str = "cosine") -> LossOutput:
    """Triplet loss (Schroff et al. 2015, FaceNet): the negative must be ``margin`` farther than the positive.

    ``loss_i = max(0, d(a_i, p_i) - d(a_i, n_i) + margin)``, averaged over i, with ``d = 1 - cosine``
    (``distance="cosine"``) or the Euclidean distance of the embeddings as given (``"euclidean"``;
    not normalised here, like sentence-transformers; BiEncoder outputs are already unit length).

    Args:
        anchor, positive, negative: [B, d] each.
        margin: >= 0, in units of the distance (cosine distance lies in [0, 2]).
        distance: "cosine" or "euclidean".

    References:
        Schroff, Kalenichenko, Philbin (2015), FaceNet, Eq. 1; Reimers & Gurevych (2019), Sentence-BERT.

    Inputs:
        (anchor, positive, negative) triplets, no labels.

    Relations:
        Equals ``TripletLoss(distance_metric=COSINE or EUCLIDEAN, triplet_margin=margin)``. Unlike InfoNCE,
        a triplet that already satisfies the margin gives zero gradient (stat ``active``: fraction not).

    Example:
        >>> a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
        >>> triplet_loss(a, p, n, margin=0.5, distance="cosine").stats["active"]  # doctest: +SKIP
    """
    _check(anchor=(anchor, 2), positive=(positive, 2), negative=(negative, 2))
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    pos_sim = F.cosine_similarity(anchor, positive, dim=-1)
    neg_sim = F.cosine_similarity(anchor, negative, dim=-1)
    if distance == "cosine":
        d_pos, d_neg = 1 - pos_sim, 1 - neg_sim
    else:
        d_pos = torch.linalg.vector_norm(anchor - positive, dim=-1)
        d_neg = torch.linalg.vector_norm(anchor - negative, dim=-1)
    per_row = F.relu(d_pos - d_neg + margin)
    with torch.no_grad():
        stats = {"accuracy": (d_pos < d_neg).float().mean().item(), "pos_sim": pos_sim.mean().item(),
                 "neg_sim": neg_sim.mean().item(), "active": (per_row > 0).float().mean().item()}
    return LossOutput(per_row.mean(), stats)


# ----------------------------------------------------------------------------------------------- graded
def _scored_stats(sims: Tensor, scores: Tensor) -> dict[str, float]:
    """Pair-order accuracy, and mean cosine of pairs scored above / not above the batch median."""
    with torch.no_grad():
        higher = scores[:, None] > scores[None, :]
        ordered = (sims[:, None] > sims[None, :]) & higher
        acc = ordered.sum() / higher.sum() if higher.any() else torch.tensor(float("nan"))
        top = scores > scores.median()
        mean = lambda x: x.mean().item() if x.numel() else float("nan")
        return {"accuracy": acc.item(), "pos_sim": mean(sims[top]), "neg_sim": mean(sims[~top])}


def cosent_loss(emb1: Tensor, emb2: Tensor, scores: Tensor, scale: float | Tensor = 20.0) -> LossOutput:
    """CoSENT (Su 2022): a ranking loss on cosines, for pairs with graded similarity scores.

    For every two pairs (i, j) with ``score_i > score_j`` the cosine of pair i should exceed that of j:
    ``loss = log(1 + sum_{score_i > score_j} exp(scale * (cos_j - cos_i)))``. Only the order of the scores
    matters, so STS-B's 0-5 scores can be used as they are.

    Args:
        emb1, emb2: [B, d] the two sides of B pairs.
        scores: [B] gold similarity (any monotone scale; ties give no term).
        scale: > 0, plays the role of 1 / temperature (20 as in sentence-transformers).

    References:
        Su (2022), CoSENT (blog post, kexue.fm/archives/8847); Li & Li (2023), AnglE (same loss on angles).

    Inputs:
        (sentence_A, sentence_B) pairs with a float score.

    Relations:
        Equals ``CoSENTLoss(scale=scale)``. :func:`mse_cosine_loss` regresses the cosine onto the score
        instead; CoSENT only asks for the right order, which is what Spearman correlation measures.

    Example:
        >>> e1, e2, s = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0.0, 2.5, 4.0, 5.0])
        >>> cosent_loss(e1, e2, s).loss  # doctest: +SKIP
    """
    _check(emb1=(emb1, 2), emb2=(emb2, 2), scores=(scores, 1))
    scale = _positive(scale, "scale")
    sims = F.cosine_similarity(emb1, emb2, dim=-1)
    s = sims * scale
    diff = s[None, :] - s[:, None]                          # diff[i, j] = s_j - s_i
    higher = scores[:, None] > scores[None, :]              # pair i should score above pair j
    loss = torch.logsumexp(torch.cat([s.new_zeros(1), diff[higher]]), dim=0)
    return LossOutput(loss, _scored_stats(sims, scores))


def angle_similarity(emb1: Tensor, emb2: Tensor) -> Tensor:
    """AnglE's similarity of B pairs: ``|cos(x, y) + sin(x, y)|`` [B], after L2 normalisation.

    Each vector of width d is read as d/2 complex numbers ``z_k = x_k + i x_{k + d/2}`` (an odd d gets one
    zero coordinate appended). The *sine* term ``sum_k (x_{k+d/2} y_k - x_k y_{k+d/2})`` is the imaginary
    part of ``sum_k z_x conj(z_y)``, the cosine its real part; AnglE compares pairs by ``|real + imaginary|``.
    This is the form of the authors' code and of sentence-transformers' ``pairwise_angle_sim``; it is not
    an angle in the geometric sense, and it depends on which coordinates are paired.

    Args:
        emb1, emb2: [B, d] the two sides of B pairs.

    References:
        Li & Li (2023), AnglE-optimized Text Embeddings (arXiv 2309.12871).
    """
    _check(emb1=(emb1, 2), emb2=(emb2, 2))
    if emb1.shape[1] % 2:                                   # pair coordinate k with k + d/2: make d even
        emb1, emb2 = F.pad(emb1, (0, 1)), F.pad(emb2, (0, 1))
    x, y = F.normalize(emb1, dim=-1), F.normalize(emb2, dim=-1)
    real = (x * y).sum(-1)
    x_re, x_im = x.chunk(2, dim=-1)
    y_re, y_im = y.chunk(2, dim=-1)
    imag = (x_im * y_re - x_re * y_im).sum(-1)
    return (real + imag).abs()


def angle_loss(emb1: Tensor, emb2: Tensor, scores: Tensor, scale: float | Tensor = 20.0) -> LossOutput:
    """AnglE (Li & Li 2023): the CoSENT ranking objective on :func:`angle_similarity` instead of the cosine.

    For every two pairs (i, j) with ``score_i > score_j``:
    ``loss = log(1 + sum_{score_i > score_j} exp(scale * (a_j - a_i)))`` with ``a = angle_similarity``.
    The motivation: the cosine saturates near +-1, where its gradient vanishes; the angle term does not
    (the paper's argument; whether it helps is measured, not assumed).

    Args:
        emb1, emb2: [B, d] the two sides of B pairs.
        scores: [B] gold similarity (any monotone scale; ties give no term).
        scale: > 0, the inverse temperature (20 as in sentence-transformers).

    References:
        Li & Li (2023), AnglE-optimized Text Embeddings (arXiv 2309.12871), Eq. 3 (the subtraction order
        follows the authors' code, as sentence-transformers notes); Su (2022), CoSENT.

    Inputs:
        (sentence_A, sentence_B) pairs with a float score.

    Relations:
        Equals sentence-transformers' ``AnglELoss(scale=scale)`` on pairs (value and gradients).
        :func:`cosent_loss` is the same objective on the cosine; the AnglE paper trains with both and with
        in-batch negatives together. ``stats`` report cosines, as the other losses do.

    Example:
        >>> e1, e2, s = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0.0, 2.5, 4.0, 5.0])
        >>> angle_loss(e1, e2, s).loss  # doctest: +SKIP
    """
    _check(emb1=(emb1, 2), emb2=(emb2, 2), scores=(scores, 1))
    scale = _positive(scale, "scale")
    s = angle_similarity(emb1, emb2) * scale
    diff = s[None, :] - s[:, None]                          # diff[i, j] = s_j - s_i
    higher = scores[:, None] > scores[None, :]              # pair i should score above pair j
    loss = torch.logsumexp(torch.cat([s.new_zeros(1), diff[higher]]), dim=0)
    return LossOutput(loss, _scored_stats(F.cosine_similarity(emb1, emb2, dim=-1), scores))


def mse_cosine_loss(emb1: Tensor, emb2: Tensor, scores: Tensor) -> LossOutput:
    """The regression baseline: mean squared error between the cosine of each pair and its score.

    Args:
        emb1, emb2: [B, d] the two sides of B pairs.
        scores: [B] target cosines in [-1, 1] (divide STS-B's 0-5 scores by 5).

    References:
        Reimers & Gurevych (2019), Sentence-BERT (the regression objective on STS-B).

    Inputs:
        (sentence_A, sentence_B) pairs with a float score.

    Relations:
        Equals ``CosineSimilarityLoss()`` (MSE, identity transform). :func:`cosent_loss` is usually
        stronger: it does not force the cosine to a value, only the order of the pairs.

    Example:
        >>> mse_cosine_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0.0, 0.5, 0.8, 1.0])).loss
        ... # doctest: +SKIP
    """
    _check(emb1=(emb1, 2), emb2=(emb2, 2), scores=(scores, 1))
    if scores.min() < -1 or scores.max() > 1:
        raise ValueError(f"scores must lie in [-1, 1] like a cosine, got {scores.min().item():g}.."
                         f"{scores.max().item():g} (divide STS-B's 0-5 scores by 5)")
    sims = F.cosine_similarity(emb1, emb2, dim=-1)
    return LossOutput(F.mse_loss(sims, scores.to(sims.dtype)), _scored_stats(sims, scores))


# ----------------------------------------------------------------------------------------------- temperature
class LearnableTemperature(nn.Module):
    """A trainable temperature, parametrised as ``t = exp(log_t)`` and clamped, as CLIP learns its scale.

    The log keeps t positive and makes steps multiplicative; clamping to ``[min_value, max_value]`` stops
    it from collapsing (CLIP caps the scale 1/t at 100, i.e. t >= 0.01). Add its parameter to the optimiser.

    Args:
        init: initial temperature (CLIP: 0.07).
        min_value, max_value: bounds of t (no gradient flows while t sits at a bound).

    References:
        Radford et al. (2021), Learning Transferable Visual Models From Natural Language Supervision, sec. 2.5.

    Example:
        >>> temp = LearnableTemperature(0.07)
        >>> a, p = torch.randn(4, 8), torch.randn(4, 8)
        >>> in_batch_info_nce(a, p, temperature=temp()).loss.backward()
        >>> temp.log_t.grad is not None
        True
    """

    def __init__(self, init: float = 0.07, min_value: float = 0.01, max_value: float = 1.0):
        super().__init__()
        if not 0 < min_value <= init <= max_value:
            raise ValueError(f"need 0 < min_value <= init <= max_value, got {min_value}, {init}, {max_value}")
        self.min_value, self.max_value = min_value, max_value
        self.log_t = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> Tensor:
        return self.log_t.exp().clamp(self.min_value, self.max_value)

    def extra_repr(self) -> str:
        return f"t={self().item():.4g}, bounds=[{self.min_value:g}, {self.max_value:g}]"


# ----------------------------------------------------------------------------------------------- Part 1
def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "SupCon", the L_out form).

    Every other text in the batch with the same label is a positive, every text with another label a
    negative. For anchor i with positives P(i):
    ``loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) )``
    where s is cosine similarity. Anchors without a positive in the batch are skipped.

    Args:
        embeddings: [B, d] (normalised inside).
        labels: [B] integer class labels.
        temperature: t > 0; smaller values sharpen the softmax.

    Returns:
        scalar loss (mean over anchors that have a positive).
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"expected embeddings [B, d] and labels [B], got {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(embeddings, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))           # an anchor is not its own candidate
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    has_pos = positives.any(1)
    if not has_pos.any():
        raise ValueError("no anchor in the batch has a positive (every label occurs once)")
    mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp(min=1)
    return -mean_log_prob_pos[has_pos].mean()
