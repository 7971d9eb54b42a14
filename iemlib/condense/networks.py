"""The embedding networks condensation methods draw: random, or briefly trained on the real set."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..augment import DSA
from ..classification import augmented_cross_entropy
from ..devices import module_to_device
from ..models import Classifier, blank_copy, build_backbone, redraw
from ..seeding import generator, seeded
from ..training import fit
from .base import CondenseSettings, CondenseTask


def random_network(task: CondenseTask, settings: CondenseSettings, *parts: object,
                   device: torch.device | str | None = None) -> nn.Module:
    """A randomly initialised backbone, seeded by (seed, parts), frozen, on ``device`` (default:
    the task's). It draws from its own generator only (the values of a backbone built under
    ``seeded(seed, *parts)``), so it may be made on a worker thread."""
    channels, size = task.train.images.shape[1], task.train.images.shape[-1]
    template = _template(settings.backbone, channels, size, tuple(task.mean), tuple(task.std))
    net = redraw(blank_copy(template), generator(task.seed, *parts))
    return freeze(module_to_device(net, task.device if device is None else device))


@functools.lru_cache(maxsize=8)
def _template(backbone: str, channels: int, image_size: int, mean: tuple[float, ...],
              std: tuple[float, ...]) -> nn.Module:
    """A backbone of that shape on the CPU to copy (built once, leaving the global generator
    as it was)."""
    with seeded("template"):
        return build_backbone(backbone, channels=channels, image_size=image_size, mean=mean,
                              std=std)


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
    fit(model, task.device_images, task.train.labels,
        augmented_cross_entropy(DSA(mean=task.mean, std=task.std)),
        steps=settings.early_steps, batch_size=256, lr=1e-3,
        generator=generator(task.seed, "early-network", index), device=task.device,
        progress=task.progress, desc=f"early network {index + 1}/{settings.pool_size}")
    return freeze(backbone)
