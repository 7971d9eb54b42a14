"""Embeddings of real and synthetic images: PCA against a hand computation, match statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iemlib.embedding import PCA, class_stats, embedding_map, first_per_class, match_summary
from iemlib.synthetic import SyntheticSet


def test_pca_of_points_on_a_line_finds_the_line():
    t = torch.linspace(-1, 1, 21)
    points = torch.stack([t, 2 * t], dim=1) + torch.tensor([3.0, -1.0])
    pca = PCA.fit(points, k=1)
    torch.testing.assert_close(pca.mean, torch.tensor([3.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(pca.components[0], torch.tensor([1, 2], dtype=torch.float64) / 5 ** 0.5)
    torch.testing.assert_close(pca.explained, torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(pca(points)[:, 0], (t * 5 ** 0.5).double())


def test_pca_against_the_eigenvectors_of_the_covariance():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(200, 5, generator=generator) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])
    points = points @ torch.linalg.qr(torch.randn(5, 5, generator=generator))[0]
    pca = PCA.fit(points, k=2)
    x = points.double() - points.double().mean(dim=0)
    values, vectors = torch.linalg.eigh(x.T @ x / (len(x) - 1))  # ascending
    for axis in range(2):
        expected = vectors[:, -1 - axis]
        expected = expected * expected[expected.abs().argmax()].sign()  # the same sign rule
        torch.testing.assert_close(pca.components[axis], expected)
    torch.testing.assert_close(pca.explained, values.flip(0)[:2] / values.sum())
    torch.testing.assert_close(pca(points), x @ pca.components.T)
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(2, dtype=torch.float64))


def test_pca_rejects_bad_input():
    with pytest.raises(ValueError, match="N×D"):
        PCA.fit(torch.randn(1, 3))
    with pytest.raises(ValueError, match="k must be"):
        PCA.fit(torch.randn(4, 3), k=4)


def test_class_stats_and_the_match_summary_by_hand():
    real = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    real_labels = torch.tensor([0, 0, 1, 1])
    means, spreads = class_stats(real, real_labels, 2)
    torch.testing.assert_close(means, torch.tensor([[1.0, 0.0], [10.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(spreads, torch.tensor([1.0, 2.0], dtype=torch.float64))
    # class 0: one synthetic point 1 away from the real mean (gap 1/1, spread 0)
    # class 1: two points at the real mean ± 1 (gap 0, spread 1/2)
    synthetic = torch.tensor([[1.0, 1.0], [9.0, 2.0], [11.0, 2.0]])
    summary = match_summary(real, real_labels, synthetic, torch.tensor([0, 1, 1]), 2)
    assert summary == pytest.approx({"gap": 0.5, "spread": 0.25})
    assert match_summary(real, real_labels, real, real_labels, 2) == {"gap": 0.0, "spread": 1.0}
    with pytest.raises(ValueError, match="class 2 has no"):
        class_stats(real, real_labels, 3)


def test_first_per_class():
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    assert first_per_class(labels, 2).tolist() == [1, 3, 0, 2]


def test_embedding_map_projects_real_and_decoded_synthetic_images():
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(12, 3, 4, 4, generator=generator)
    labels = torch.arange(12) % 2
    net = nn.Flatten()  # embeddings are the pixels: the map must be the PCA of the pixels
    copy = SyntheticSet(real[:4], labels[:4])
    tiled = SyntheticSet(torch.rand(2, 3, 4, 4, generator=generator), torch.tensor([0, 1]), factor=2)
    result = embedding_map(net, real, labels, {"copy": copy, "tiled": tiled}, per_class=5)
    keep = first_per_class(labels, 5)
    pca = PCA.fit(real[keep].flatten(1))
    torch.testing.assert_close(result.real, pca(real[keep].flatten(1)))
    assert result.real_labels.tolist() == labels[keep].tolist()
    points, copy_labels = result.synthetic["copy"]
    torch.testing.assert_close(points, pca(real[:4].flatten(1)))
    assert copy_labels.tolist() == [0, 1, 0, 1]
    assert result.synthetic["tiled"][0].shape == (8, 2)  # 2 stored images × 4 decoded tiles
    assert result.summary["copy"]["gap"] > 0
    identical = embedding_map(net, real, labels, {"all": SyntheticSet(real, labels)})
    assert identical.summary["all"] == pytest.approx({"gap": 0.0, "spread": 1.0})
