"""Geometry measures: known values on constructed data, and equal to the papers' formulas."""
import numpy as np
import pytest
import torch

from embedlessons import geometry as g


def test_top_component_share_known_cases():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(20000, 8))
    assert abs(g.top_component_share(iso) - 1 / 8) < 0.01
    line = np.outer(rng.normal(size=500), rng.normal(size=8))
    assert g.top_component_share(line) == pytest.approx(1.0)
    assert g.top_component_share(iso, k=8) == pytest.approx(1.0)


def test_mean_pairwise_cosine_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) + 2.0
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    brute = sims[~np.eye(50, dtype=bool)].mean()
    assert g.mean_pairwise_cosine(x) == pytest.approx(brute, abs=1e-12)
    assert abs(g.mean_pairwise_cosine(rng.normal(size=(3000, 64)))) < 0.01


def test_alignment_uniformity_equal_wang_isola_formulas():
    # Wang & Isola (2020), Section 4.1: align = E ||f(x)-f(y)||^alpha; uniform = log E exp(-t ||f(x)-f(y)||^2)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(64, 16)), rng.normal(size=(64, 16))
    tx = torch.nn.functional.normalize(torch.tensor(x), dim=1)
    ty = torch.nn.functional.normalize(torch.tensor(y), dim=1)
    ref_align = (tx - ty).norm(p=2, dim=1).pow(2).mean().item()
    ref_unif = torch.pdist(tx, p=2).pow(2).mul(-2).exp().mean().log().item()
    assert g.alignment(x, y) == pytest.approx(ref_align, rel=1e-10)
    assert g.uniformity(x) == pytest.approx(ref_unif, rel=1e-8)
    assert g.alignment(x, x) == pytest.approx(0.0, abs=1e-12)
    collapsed = np.ones((10, 4))
    assert g.uniformity(collapsed) == pytest.approx(0.0, abs=1e-9)


def test_silhouette_separates_clusters():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 100)
    separated = np.where(labels[:, None] == 0, 1.0, -1.0) * np.array([1.0, 0, 0]) + 0.05 * rng.normal(size=(200, 3))
    mixed = rng.normal(size=(200, 3))
    assert g.silhouette(separated, labels) > 0.9
    assert abs(g.silhouette(mixed, labels)) < 0.1


def test_bad_input():
    with pytest.raises(ValueError, match=r"2-D array \[N, d\]"):
        g.top_component_share(np.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        g.alignment(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        g.uniformity(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="labels must have shape"):
        g.silhouette(np.ones((4, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="two distinct labels"):
        g.silhouette(np.random.default_rng(0).normal(size=(4, 2)), np.zeros(4))


def test_geometry_report_collects_the_measures():
    rng = np.random.default_rng(4)
    x, labels = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    rep = g.geometry_report(x, labels=labels, positives=(x[:10], x[10:20]))
    assert rep["silhouette"] == g.silhouette(x, labels)
    assert rep["alignment"] == g.alignment(x[:10], x[10:20])
    assert rep["uniformity"] == g.uniformity(x)
    assert set(g.geometry_report(x)) == {"top-1 PC share", "mean cosine", "uniformity"}
