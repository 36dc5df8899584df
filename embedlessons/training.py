"""Training loops. Part 1 needs only a short supervised fine-tune on labelled texts (section 1.3);
Part 2 builds the full contrastive trainer here."""
from __future__ import annotations

import numpy as np
import torch

from .losses import supervised_contrastive
from .progress import progress_bar

__all__ = ["balanced_batches", "fine_tune_on_labels"]


def balanced_batches(labels: np.ndarray, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Index batches with the same number of texts from each class (so every text has positives)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if batch_size % len(classes) or batch_size < 2 * len(classes):
        raise ValueError(f"batch_size must be a multiple of the number of classes ({len(classes)}) "
                         f"and at least twice it, got {batch_size}")
    rng = np.random.default_rng(seed)
    per_class = batch_size // len(classes)
    pools = {c: np.flatnonzero(labels == c) for c in classes}
    return [np.concatenate([rng.choice(pools[c], per_class, replace=False) for c in classes])
            for _ in range(steps)]


def fine_tune_on_labels(model, texts: list[str], labels: np.ndarray, steps: int = 20, batch_size: int = 32,
                        lr: float = 2e-5, temperature: float = 0.05, max_length: int = 64, seed: int = 0,
                        progress: bool = True) -> list[float]:
    """Fine-tune a bi-encoder in place with :func:`~embedlessons.losses.supervised_contrastive`.

    Args:
        model: a :class:`~embedlessons.models.BiEncoder`.
        texts, labels: N texts and their integer labels [N].
        steps, batch_size, lr, temperature, max_length: training settings (AdamW, constant lr).
        seed: makes batches and dropout deterministic.

    Returns:
        the loss of every step.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for idx in progress_bar(balanced_batches(labels, batch_size, steps, seed), desc="fine-tuning", enabled=progress,
                            unit="step"):
        batch = model.tokenize([texts[i] for i in idx], max_length=max_length)
        loss = supervised_contrastive(model(batch), torch.as_tensor(labels[idx], device=model.device), temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
