"""The classification task (the paper's Figure 1(a)): how well a classifier trained on a
(condensed) image set does on held-out real images.

As DM and DSA evaluate condensed sets: a freshly initialised ConvNet classifier is trained with
cross-entropy on DSA-augmented images (all six groups); its top-1 accuracy is measured on the
protocol's held-out images, every image that is not a training image: the queries and the
database images outside the training split.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import DSA, STRONG
from .data import Protocol
from .models import Classifier, build_backbone
from .seeding import generator, seeded
from .training import Objective, TrainSettings, fit, predict


def augmented_cross_entropy(dsa: DSA) -> Objective:
    """The ``fit`` objective: cross-entropy of the model's logits on a DSA view of the batch."""
    def objective(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  gen: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(model(dsa.augment(images, gen)), labels)
    return objective


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                     mean: Sequence[float], std: Sequence[float], settings: TrainSettings,
                     seed: int, device: torch.device | str = "cpu", strategy: str = STRONG,
                     progress: bool = True) -> tuple[Classifier, list[float]]:
    """Train a freshly initialised classifier on the images; returns it and its per-step losses."""
    with seeded(seed, "classifier-network"):
        backbone = build_backbone(settings.backbone, channels=images.shape[1],
                                  image_size=images.shape[-1], mean=mean, std=std)
        net = Classifier(backbone, num_classes)
    objective = augmented_cross_entropy(DSA(strategy, mean=mean, std=std))
    losses = fit(net, images, labels, objective, steps=settings.steps,
                 batch_size=settings.batch_size, lr=settings.lr,
                 weight_decay=settings.weight_decay,
                 generator=generator(seed, "classifier-training"), device=device,
                 progress=progress, desc="classifier training")
    return net, losses.tolist()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             batch_size: int = 500, device: torch.device | str = "cpu",
             progress: bool = False) -> float:
    """Top-1 accuracy: the fraction of images whose largest logit is their label."""
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"accuracy needs as many labels as images (at least one), got "
                         f"{len(images)} images and {len(labels)} labels")
    logits = predict(model, images, batch_size=batch_size, device=device, progress=progress,
                     desc="classify")
    return (logits.argmax(dim=1) == labels.cpu()).float().mean().item()


def held_out(protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of every protocol image outside the training split.

    The training images are drawn from the database, so this is the query set plus the database
    images whose source index is not a training index. Queries are never training images: on
    CIFAR-10 they are drawn apart from the database, and for an ImageFolder they come from
    ``test/`` or ``val/`` (their indices count in that folder, so they are not compared).
    """
    database = protocol.database
    kept = ~torch.isin(database.indices, protocol.train.indices)
    return (torch.cat([protocol.query.images, database.images[kept]]),
            torch.cat([protocol.query.labels, database.labels[kept]]))
