"""Contrastive losses. Each takes embeddings and returns a scalar loss.

Part 1 uses :func:`supervised_contrastive` to fine-tune MiniLM on topic labels (section 1.3);
Part 2 adds InfoNCE and its relatives here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["supervised_contrastive"]


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
