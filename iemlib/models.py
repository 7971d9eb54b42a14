"""Backbones (ConvNet-3, ResNetAP-10) and the hashing network (backbone + DHD hash head).

Every model takes images in [0, 1] and normalises them itself, so synthetic sets stay in pixel
space and augmentations act on pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
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


class BasicBlockAP(nn.Module):
    """A residual block that downsamples by average pooling instead of a strided conv.

    Main path: Conv3x3 → IN → ReLU → [AvgPool ``stride``] → Conv3x3 → IN. The shortcut is the
    identity, or Conv1x1 → [AvgPool ``stride``] → IN where the shape changes. Sum, then ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            instance_norm(out_channels), nn.ReLU(inplace=True), pool,
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            instance_norm(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride > 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(), instance_norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


def resnet_ap_stem(channels: int, width: int, image_size: int) -> tuple[list[nn.Module], int]:
    """The stem by input size (IDC's rule) and the factor by which it downsamples.

    Up to 64 px: Conv3x3 → IN → ReLU (CIFAR-like, no pooling). 65–128 px: the same, then AvgPool 2.
    Above 128 px: Conv7x7 (stride 1) → IN → ReLU → AvgPool 4 (ImageNet, 224 → 56).
    """
    kernel, pool = (3, 1) if image_size <= 64 else (3, 2) if image_size <= 128 else (7, 4)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False),
                               instance_norm(width), nn.ReLU(inplace=True)]
    if pool > 1:
        layers.append(nn.AvgPool2d(pool))
    return layers, pool


class ResNetAP(nn.Module):
    """ResNetAP (IDC, Kim et al. 2022): a ResNet whose every downsampling is average pooling.

    The default is ResNetAP-10: one BasicBlockAP a stage, widths 64/128/256/512, instance norm,
    global average pooling to a 512-d embedding. Stages 2-4 halve the resolution, so after the
    stem (see ``resnet_ap_stem``) the image size must be divisible by 2**(stages - 1).
    Convolutions start from He-normal weights (fan-out), as in IDC.
    """

    def __init__(self, channels: int = 3, width: int = 64, blocks: Sequence[int] = (1, 1, 1, 1),
                 image_size: int = 224, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        if width < 1 or not blocks or min(blocks) < 1:
            raise ValueError(f"ResNetAP needs width >= 1 and blocks >= 1, got {width}, {blocks}")
        stem, reduction = resnet_ap_stem(channels, width, image_size)
        divisor = reduction * 2 ** (len(blocks) - 1)
        if image_size < 1 or image_size % divisor:
            raise ValueError(f"image size {image_size} is not divisible by {divisor} "
                             f"(stem pooling {reduction} × 2**{len(blocks) - 1})")
        layers: list[nn.Module] = [Normalize(mean, std), *stem]
        in_channels = width
        for stage, count in enumerate(blocks):
            out_channels = width * 2 ** stage
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlockAP(in_channels, out_channels, stride))
                in_channels = out_channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.embed_dim = in_channels
        he_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def he_normal(net: nn.Module, generator: torch.Generator | None = None) -> None:
    """He-normal (fan-out) weights for every convolution of ``net``, ResNetAP's (IDC's) start."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu",
                                    generator=generator)


# modules whose parameters start deterministically (ones and zeros)
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)


def blank_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with copies of its buffers and new, unset parameters (the structure
    for ``redraw``), in a quarter of ``copy.deepcopy``'s time for ConvNet-3."""
    blank = net.__class__.__new__(net.__class__)
    blank.__dict__ = {k: v.copy() if isinstance(v, (dict, set)) else v
                      for k, v in net.__dict__.items()}  # its own hook dicts, not net's
    blank._parameters = {k: None if p is None else nn.Parameter(torch.empty_like(p),
                                                                p.requires_grad)
                         for k, p in net._parameters.items()}
    blank._buffers = {k: None if b is None else b.clone() for k, b in net._buffers.items()}
    blank._modules = {k: None if m is None else blank_copy(m) for k, m in net._modules.items()}
    return blank


def redraw(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Start ``net``'s parameters again, drawing from ``generator`` what its constructor drew
    from the global generator, in the same order: a backbone built under ``seeding.seeded(*parts)``
    equals one redrawn from ``seeding.generator(*parts)``. No global state is touched, so it
    may run on a worker thread. Returns ``net``."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):  # torch's own reset_parameters
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, NORMS):
                module.reset_parameters()
            elif next(module.parameters(recurse=False), None) is not None:
                raise TypeError(f"redraw does not know how {type(module).__name__} starts")
        if isinstance(net, ResNetAP):
            he_normal(net, generator)
    return net


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
    """A backbone by name: ``convnet`` (ConvNet-3) or ``resnetap`` (ResNetAP-10)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose from {sorted(BACKBONES)}")
    return BACKBONES[name](channels, image_size=image_size, mean=mean, std=std)


BACKBONES = {"convnet": ConvNet, "resnetap": ResNetAP}
