"""The embedding networks condensation methods draw: random, or briefly trained on the real set."""

from __future__ import annotations

from torch import nn

from ..augment import DSA
from ..classification import augmented_cross_entropy
from ..devices import module_to_device
from ..models import Classifier, build_backbone
from ..seeding import generator, seeded
from ..training import fit
from .base import CondenseSettings, CondenseTask


def random_network(task: CondenseTask, settings: CondenseSettings, *parts: object) -> nn.Module:
    """A randomly initialised backbone, seeded by (seed, parts), frozen, on the task's device."""
    channels, size = task.train.images.shape[1], task.train.images.shape[-1]
    with seeded(task.seed, *parts):
        net = build_backbone(settings.backbone, channels=channels, image_size=size,
                             mean=task.mean, std=task.std)
    return freeze(module_to_device(net, task.device))


def freeze(net: nn.Module) -> nn.Module:
    """Evaluation mode, no gradients for the parameters; returns ``net``."""
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def early_network(task: CondenseTask, settings: CondenseSettings, index: int) -> nn.Module:
    """A backbone trained ``early_steps`` steps (cross-entropy, DSA) on the real training set."""
    backbone = random_network(task, settings, "iem-network", index)
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)
    with seeded(task.seed, "early-classifier", index):
        model = Classifier(backbone, task.num_classes)
    fit(model, task.train.images, task.train.labels,
        augmented_cross_entropy(DSA(mean=task.mean, std=task.std)),
        steps=settings.early_steps, batch_size=256, lr=1e-3,
        generator=generator(task.seed, "early-network", index), device=task.device,
        progress=task.progress, desc=f"early network {index + 1}/{settings.pool_size}")
    return freeze(backbone)
