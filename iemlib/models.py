"""Backbones (ConvNet-3) and the hashing network (backbone + DHD hash head).

Every model takes images in [0, 1] and normalises them itself, so synthetic sets stay in pixel
space and augmentations act on pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of a backbone."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def instance_norm(channels: int) -> nn.Module:
    """Instance norm with affine parameters, written as GroupNorm with a group per channel."""
    return nn.GroupNorm(channels, channels, affine=True)


class ConvNet(nn.Module):
    """ConvNet-D: D blocks of Conv3x3(width) → instance norm → ReLU → AvgPool2.

    With width 128, depth 3 and 32×32 input the embedding has 128·4·4 = 2,048 dimensions.
    """

    def __init__(self, channels: int = 3, width: int = 128, depth: int = 3, image_size: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got {depth}, {width}")
        if image_size % (2 ** depth):
            raise ValueError(f"image size {image_size} is not divisible by 2**depth = {2 ** depth}")
        layers: list[nn.Module] = [Normalize(mean, std)]
        for i in range(depth):
            layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1),
                       instance_norm(width), nn.ReLU(inplace=True), nn.AvgPool2d(2)]
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.embed_dim = width * (image_size // 2 ** depth) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class HashHead(nn.Module):
    """DHD's hash layer: Linear(K, no bias) → LayerNorm → tanh, continuous codes in (-1, 1)."""

    def __init__(self, embed_dim: int, bits: int):
        super().__init__()
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        self.linear = nn.Linear(embed_dim, bits, bias=False)
        self.norm = nn.LayerNorm(bits)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.linear(z)))


class HashNet(nn.Module):
    """A backbone followed by a hash head: continuous codes in (-1, 1)."""

    def __init__(self, backbone: nn.Module, bits: int):
        super().__init__()
        self.backbone = backbone
        self.head = HashHead(backbone.embed_dim, bits)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Classifier(nn.Module):
    """A backbone followed by a linear layer: class logits."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def build_backbone(name: str, *, channels: int, image_size: int, mean: Sequence[float],
                   std: Sequence[float]) -> nn.Module:
    """A backbone by name: ``convnet`` (ConvNet-3)."""
    if name == "convnet":
        return ConvNet(channels, image_size=image_size, mean=mean, std=std)
    raise ValueError(f"unknown backbone {name!r}: expected 'convnet'")
