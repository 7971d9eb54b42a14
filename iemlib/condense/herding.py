"""Herding: the real images whose embeddings track their class mean (Welling, 2009).

A ConvNet trained briefly on the real training set (``early_steps`` steps, the early network of
``condense.networks``) embeds every training image; for each class, herding then greedily picks
``ipc`` images, each time the one that brings the running mean of the picked embeddings closest
(L2) to the class mean, without replacement. The set holds the picked real images, unchanged.
"""

from __future__ import annotations

import torch

from ..synthetic import SyntheticSet
from ..training import as_float, predict
from .base import CondenseResult, CondenseSettings, CondenseTask, timed
from .networks import early_network


def herding_select(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k rows herding picks, in the order picked.

    Step t picks, among the rows not yet picked, the row e minimising
    ‖(e + Σ picked) / t − mean of all rows‖₂; ties go to the lowest index.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be N×D, got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    if not 1 <= k <= n:
        raise ValueError(f"herding picks k in 1..{n} of {n} embeddings, got k={k}")
    points = embeddings.double()
    target = points.mean(dim=0)
    total = torch.zeros_like(target)
    taken = torch.zeros(n, dtype=torch.bool, device=points.device)
    picked = []
    for t in range(1, k + 1):
        distance = ((total + points) / t - target).square().sum(dim=1)
        distance[taken] = float("inf")
        index = int(distance.argmin())  # the first of equal minima
        picked.append(index)
        taken[index] = True
        total += points[index]
    return torch.tensor(picked, dtype=torch.long)


def herd(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """Embed the training set with one early network, then herd ``ipc`` images a class."""
    members = task.class_indices()
    for c, indices in enumerate(members):
        if settings.ipc > len(indices):
            raise ValueError(f"class {c} has {len(indices)} training images; herding cannot pick "
                             f"ipc={settings.ipc}")
    net = early_network(task, settings, 0)
    embeddings = predict(net, task.train.images, device=task.device, progress=task.progress,
                         desc="herding embeddings")
    chosen = torch.cat([indices[herding_select(embeddings[indices], settings.ipc)]
                        for indices in members])
    images = as_float(task.train.images[chosen])
    synthetic = SyntheticSet(images, task.train.labels[chosen], factor=1)
    return CondenseResult(synthetic, info={"train_indices": chosen.tolist()})


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """Herding; ``result.info["train_indices"]`` are the picked positions in ``task.train``."""
    return timed(lambda: herd(task, settings))
