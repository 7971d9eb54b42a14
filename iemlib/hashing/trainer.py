"""The one hashing trainer: a fresh hashing network trained on any image set, and its encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models import HashNet, build_backbone
from ..seeding import generator, seeded
from ..training import TrainSettings, fit, predict
from .codebook import check_label_range
from .dhd import DHDLoss
from .dpn import DPNLoss
from .orthohash import OrthoHashLoss

# name -> objective class(bits, num_classes, *, mean, std); built under the network's seed
LOSSES = {"dhd": DHDLoss, "dpn": DPNLoss, "orthohash": OrthoHashLoss}


@dataclass(frozen=True)
class HashingSettings(TrainSettings):
    """How the hashing network is trained: ``TrainSettings`` and the hashing loss."""

    loss: str = "dhd"


def train_hashing(images: torch.Tensor, labels: torch.Tensor, *, bits: int, num_classes: int,
                  mean: Sequence[float], std: Sequence[float], settings: HashingSettings,
                  seed: int, device: torch.device | str = "cpu",
                  progress: bool = True) -> tuple[HashNet, list[float]]:
    """Train a freshly initialised hashing network; returns it and its per-step losses."""
    if settings.loss not in LOSSES:
        raise ValueError(f"unknown hashing method {settings.loss!r}: choose from {sorted(LOSSES)}")
    if labels.ndim == 1:  # once here: the losses check no ranges on a GPU (a wait a step)
        check_label_range(labels, num_classes)
    with seeded(seed, "hash-network"):
        backbone = build_backbone(settings.backbone, channels=images.shape[1],
                                  image_size=images.shape[-1], mean=mean, std=std)
        net = HashNet(backbone, bits)
        objective = LOSSES[settings.loss](bits, num_classes, mean=mean, std=std).to(device)
    losses = fit(net, images, labels, objective, steps=settings.steps,
                 batch_size=settings.batch_size, lr=settings.lr,
                 weight_decay=settings.weight_decay, generator=generator(seed, "hash-training"),
                 device=device, extra_parameters=list(objective.parameters()),
                 progress=progress, desc=f"{settings.loss} training")
    return net, losses.tolist()


def encode(net: HashNet, images: torch.Tensor, *, device: torch.device | str = "cpu",
           batch_size: int = 500, progress: bool = False) -> torch.Tensor:
    """±1 codes (float, N×K) for uint8 or [0, 1] images."""
    codes = predict(net, images, batch_size=batch_size, device=device, progress=progress)
    return torch.where(codes >= 0, 1.0, -1.0)
