"""Feature embeddings of real and synthetic images, their 2-D projection, and how they match.

DM and IEM pull the mean embedding of each class's synthetic images onto that of its real
images, under random networks. ``embedding_map`` embeds a sample of the real training images and
the decoded images of each synthetic set with one network, projects everything onto the two
principal axes of the real embeddings (``PCA``), and measures, per class in the full embedding
space, the gap between the synthetic and the real mean and the spread of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .synthetic import SyntheticSet
from .training import predict


@dataclass(frozen=True)
class PCA:
    """Principal axes of a point cloud: x ↦ (x − mean) · componentsᵀ."""

    mean: torch.Tensor          # D
    components: torch.Tensor    # k × D, orthonormal rows; each row's largest |entry| positive
    explained: torch.Tensor     # k: the share of the total variance along each axis

    @classmethod
    def fit(cls, points: torch.Tensor, k: int = 2) -> "PCA":
        """The k leading axes of ``points`` (N × D), by SVD of the centred points (float64)."""
        if points.ndim != 2 or len(points) < 2:
            raise ValueError(f"PCA needs an N×D matrix with N >= 2, got {tuple(points.shape)}")
        if not 1 <= k <= min(points.shape):
            raise ValueError(f"k must be in 1..{min(points.shape)}, got {k}")
        x = points.double()
        mean = x.mean(dim=0)
        _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
        components = vh[:k]
        largest = components.gather(1, components.abs().argmax(dim=1, keepdim=True))
        variance = singular.square()
        return cls(mean, components * largest.sign(), variance[:k] / variance.sum())

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return (points.double() - self.mean) @ self.components.T


def class_stats(embeddings: torch.Tensor, labels: torch.Tensor,
                num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: the mean embedding (C × D) and the spread, √(mean ‖z − mean‖²) (C)."""
    means, spreads = [], []
    for c in range(num_classes):
        members = embeddings[labels == c].double()
        if len(members) == 0:
            raise ValueError(f"class {c} has no embeddings")
        mean = members.mean(dim=0)
        means.append(mean)
        spreads.append((members - mean).square().sum(dim=1).mean().sqrt())
    return torch.stack(means), torch.stack(spreads)


def match_summary(real: torch.Tensor, real_labels: torch.Tensor, synthetic: torch.Tensor,
                  synthetic_labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Averaged over classes, in units of the real class's spread: ``gap``, the distance from
    the synthetic to the real class mean (what DM and IEM minimise), and ``spread``, the
    synthetic images' own spread (1: as diverse as the real ones)."""
    real_means, real_spreads = class_stats(real, real_labels, num_classes)
    syn_means, syn_spreads = class_stats(synthetic, synthetic_labels, num_classes)
    gap = (syn_means - real_means).norm(dim=1) / real_spreads
    return {"gap": float(gap.mean()), "spread": float((syn_spreads / real_spreads).mean())}


@dataclass
class EmbeddingMap:
    """Real and synthetic embeddings projected on the real ones' principal axes."""

    pca: PCA
    real: torch.Tensor                                      # N × 2
    real_labels: torch.Tensor
    synthetic: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (points M × 2, labels)
    summary: dict[str, dict[str, float]]                     # name -> match_summary


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` items of each class, class by class."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class]
                      for c in labels.unique().tolist()])


def embedding_map(net: nn.Module, real_images: torch.Tensor, real_labels: torch.Tensor,
                  sets: Mapping[str, SyntheticSet], *, per_class: int | None = None,
                  device: torch.device | str = "cpu") -> EmbeddingMap:
    """Embed real images (the first ``per_class`` of each class) and every set's decoded images
    with ``net``; project them with the PCA of the real embeddings."""
    if per_class is not None:
        keep = first_per_class(real_labels, per_class)
        real_images, real_labels = real_images[keep], real_labels[keep]
    num_classes = int(real_labels.max()) + 1
    real = predict(net, real_images, device=device)
    pca = PCA.fit(real)
    projected, summary = {}, {}
    for name, synthetic in sets.items():
        images, labels = synthetic.decode()
        embedded = predict(net, images, device=device)
        projected[name] = (pca(embedded), labels)
        summary[name] = match_summary(real, real_labels, embedded, labels, num_classes)
    return EmbeddingMap(pca, pca(real), real_labels, projected, summary)
