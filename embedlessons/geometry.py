"""Geometry of an embedding space: isotropy, alignment and uniformity, cluster quality.

Contextual embeddings tend to crowd into a narrow cone (anisotropy; Ethayarajh 2019, Gao et al.
2019): a few directions carry most of the variance and random pairs have high cosine similarity.
Contrastive training spreads them out. These functions put numbers on that.

All functions take NumPy arrays of embeddings [N, d] (and labels [N] where needed).
"""
from __future__ import annotations

import numpy as np

__all__ = ["top_component_share", "mean_pairwise_cosine", "alignment", "uniformity", "silhouette",
           "normalize_rows", "geometry_report"]


def _check(x: np.ndarray, name: str = "embeddings", min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d], got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row (rows of zeros stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_component_share(x: np.ndarray, k: int = 1) -> float:
    """Share of total variance on the top-``k`` principal components (1/d for a perfectly isotropic
    space, 1.0 when all variance lies on k directions). Computed on the embeddings as given."""
    x = _check(x)
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must be in [1, {x.shape[1]}], got {k}")
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    return float(s[:k].sum() / s.sum())


def mean_pairwise_cosine(x: np.ndarray, max_rows: int = 2000, seed: int = 0) -> float:
    """Mean cosine similarity over all distinct pairs (a random sample of ``max_rows`` rows when
    larger). Near 0 for an isotropic space; near 1 when every vector points the same way."""
    x = _check(x)
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    u = normalize_rows(x)
    n = len(u)
    total = u.sum(0)
    # sum over i != j of u_i . u_j = |sum u|^2 - sum |u_i|^2
    return float((total @ total - (u * u).sum()) / (n * (n - 1)))


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """Alignment (Wang & Isola 2020): E ||f(x) - f(y)||^alpha over positive pairs (rows of x and y),
    after L2 normalisation. Lower is better: positives sit close together."""
    x, y = _check(x, "x", 1), _check(y, "y", 1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (row i of x pairs with row i of y), "
                         f"got {x.shape} and {y.shape}")
    d = np.linalg.norm(normalize_rows(x) - normalize_rows(y), axis=1)
    return float(np.mean(d ** alpha))


def uniformity(x: np.ndarray, t: float = 2.0, max_rows: int = 2000, seed: int = 0) -> float:
    """Uniformity (Wang & Isola 2020): log E exp(-t ||f(x) - f(y)||^2) over distinct pairs, after L2
    normalisation. Lower (more negative) is better: vectors spread over the sphere."""
    x = _check(x)
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    u = normalize_rows(x)
    sq = np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None)[np.triu_indices(len(u), k=1)]
    # log-mean-exp, computed stably
    a = -t * sq
    return float(a.max() + np.log(np.mean(np.exp(a - a.max()))))


def silhouette(x: np.ndarray, labels: np.ndarray, metric: str = "cosine", max_rows: int = 4000,
               seed: int = 0) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) of the clusters given by ``labels``: +1 tight and
    well separated, 0 overlapping, <0 misassigned. Wraps scikit-learn on a seeded sample."""
    from sklearn.metrics import silhouette_score

    x = _check(x)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError("silhouette needs at least two distinct labels")
    n = min(max_rows, len(x))
    return float(silhouette_score(x, labels, metric=metric, sample_size=n if n < len(x) else None,
                                  random_state=seed))


def geometry_report(x: np.ndarray, labels: np.ndarray | None = None, positives: tuple[np.ndarray, np.ndarray] | None = None,
                    uniformity_x: np.ndarray | None = None) -> dict[str, float]:
    """All measures of this module for one embedding space, as a dict.

    Args:
        x: embeddings [N, d] of a sample of texts (isotropy, mean cosine; silhouette with ``labels``).
        labels: [N] class labels for the silhouette (optional).
        positives: (a, b), each [P, d], embeddings of positive pairs for the alignment (optional).
        uniformity_x: embeddings to measure uniformity on (default: ``x``).
    """
    report = {"top-1 PC share": top_component_share(x), "mean cosine": mean_pairwise_cosine(x),
              "uniformity": uniformity(x if uniformity_x is None else uniformity_x)}
    if positives is not None:
        report["alignment"] = alignment(*positives)
    if labels is not None:
        report["silhouette"] = silhouette(x, labels)
    return report
