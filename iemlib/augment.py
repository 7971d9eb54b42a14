"""Differentiable siamese augmentation (DSA) and multi-formation decoding.

DSA (Zhao & Bilen, 2021) draws one transformation group per batch (color, crop, cutout, flip,
scale or rotate) and per-image parameters; a *siamese* draw gives every image the same
parameters, so a real batch and a synthetic batch of one class see the same transformation.
Every operation is differentiable in the images. Images are in [0, 1]; the transformations act
in normalised space (as in the reference code) so that its ratios carry over unchanged.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .devices import to_device

# each group's per-image parameters: name -> shape of one image's uniforms in [0, 1)
PARAMETERS: dict[str, dict[str, tuple[int, ...]]] = {
    "color": {"brightness": (), "saturation": (), "contrast": ()},
    "crop": {"shift": (2,)},
    "cutout": {"center": (2,)},
    "flip": {"flip": ()},
    "scale": {"scale": (2,)},
    "rotate": {"angle": ()},
}
GROUPS = tuple(PARAMETERS)
STRONG = "color_crop_cutout_flip_scale_rotate"
WEAK = "crop_flip"


@dataclass(frozen=True)
class DSAParams:
    """One draw: the group and its per-image parameters (tensors of length n)."""

    group: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def expand(self, n: int) -> "DSAParams":
        """The same parameters repeated for n images (a siamese draw has n = 1)."""
        return DSAParams(self.group, {k: v[:1].expand(n, *v.shape[1:]) for k, v in self.values.items()})


@dataclass(frozen=True)
class DSA:
    """Differentiable siamese augmentation with the reference ratios."""

    strategy: str = STRONG
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    flip: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"unknown DSA groups {unknown} in {self.strategy!r}; choose from {GROUPS}")

    @property
    def groups(self) -> list[str]:
        return list(_groups(self.strategy))

    def sample(self, n: int, generator: torch.Generator, siamese: bool = False) -> DSAParams:
        """Draw one group and parameters for n images (shared by all when ``siamese``)."""
        groups = _groups(self.strategy)
        group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
        m = 1 if siamese else n
        values = {name: torch.rand(m, *shape, generator=generator)
                  for name, shape in PARAMETERS[group].items()}
        params = DSAParams(group, values)
        return params.expand(n) if siamese else params

    def __call__(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        mean = _constant(tuple(self.mean), x.device, x.dtype).view(1, -1, 1, 1)
        std = _constant(tuple(self.std), x.device, x.dtype).view(1, -1, 1, 1)
        v = {k: to_device(t, x.device, x.dtype) for k, t in params.values.items()}
        z = (x - mean) / std
        z = getattr(self, f"_{params.group}")(z, v)
        return z * std + mean

    def apply_each(self, batches: Sequence[torch.Tensor],
                   draws: Sequence[DSAParams]) -> list[torch.Tensor]:
        """``[self(b, d.expand(len(b))) for b, d in zip(batches, draws)]`` for siamese draws,
        in one call a group: the batches of a group go through together, each image with its
        batch's parameters (every operation acts on each image alone, so the result is the
        same, and a GPU launches at most one call's kernels a group instead of one a batch)."""
        out: list[torch.Tensor | None] = [None] * len(batches)
        for group in dict.fromkeys(d.group for d in draws):
            members = [i for i, d in enumerate(draws) if d.group == group]
            sizes = [len(batches[i]) for i in members]
            values = {key: torch.cat([draws[i].values[key][:1].expand(n, *value.shape[1:])
                                      for i, n in zip(members, sizes)])
                      for key, value in draws[members[0]].values.items()}
            result = self(torch.cat([batches[i] for i in members]), DSAParams(group, values))
            for i, part in zip(members, result.split(sizes)):
                out[i] = part
        return out  # type: ignore[return-value]

    def table(self, draws: Sequence[DSAParams]) -> torch.Tensor:
        """Siamese draws as one float table, a row a draw: the index of its group in ``groups``,
        then the parameters of every group of the strategy (zeros for those it did not draw),
        laid out as ``columns`` says."""
        groups, columns = _groups(self.strategy), _columns(self.strategy)
        width = 1 + sum(math.prod(shape) for _, shape in columns.values())
        rows = []
        for d in draws:
            row = [0.0] * width
            row[0] = float(groups.index(d.group))
            for name, values in d.values.items():
                start, shape = columns[name]
                row[start:start + math.prod(shape)] = values[0].flatten().tolist()
            rows.append(row)
        return torch.tensor(rows)

    def columns(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Each parameter's first column in ``table`` and the shape of one image's values."""
        return dict(_columns(self.strategy))

    def apply_mixed(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Each image with its own draw, ``table``'s row of the same index: every group of the
        strategy runs on the whole batch and each image keeps its own group's result. The same
        numbers as ``apply_each`` at the cost of every group's work, with no shape or call that
        depends on the draws, so that one compiled graph serves every iteration."""
        # traced when compiled: the uncached functions (dynamo warns at a functools.cache)
        columns, groups = _columns.__wrapped__(self.strategy), _groups.__wrapped__(self.strategy)
        values = {name: table[:, start:start + math.prod(shape)].reshape(-1, *shape)
                  for name, (start, shape) in columns.items()}
        out = x
        for index, group in enumerate(groups):
            transformed = self(x, DSAParams(group, {k: values[k] for k in PARAMETERS[group]}))
            out = torch.where((table[:, 0] == index).view(-1, 1, 1, 1), transformed, out)
        return out

    def augment(self, x: torch.Tensor, generator: torch.Generator, siamese: bool = False) -> torch.Tensor:
        """Sample and apply in one call."""
        return self(x, self.sample(len(x), generator, siamese))

    # One method per group; z is in normalised space, v holds per-image uniforms in [0, 1).
    def _color(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        z = z + (v["brightness"].view(-1, 1, 1, 1) - 0.5) * self.brightness
        gray = z.mean(dim=1, keepdim=True)
        z = (z - gray) * (v["saturation"].view(-1, 1, 1, 1) * self.saturation) + gray
        level = z.mean(dim=(1, 2, 3), keepdim=True)
        return (z - level) * (v["contrast"].view(-1, 1, 1, 1) + self.contrast) + level

    def _crop(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        size = _constant(tuple(map(float, z.shape[-2:][::-1])), z.device, z.dtype)
        pixels = torch.round((v["shift"] * 2 - 1) * self.crop * size)  # integer shifts (W, H)
        theta = _affine(len(z), z)
        theta[:, :, 2] = pixels * 2 / size
        return _warp(z, theta)

    def _cutout(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        masks = []
        for axis, length in ((0, z.shape[-2]), (1, z.shape[-1])):
            size = int(length * self.cutout + 0.5)
            start = (v["center"][:, axis] * (length + 1 - size % 2)).long().view(-1, 1) - size // 2
            position = torch.arange(length, device=z.device).view(1, -1)
            masks.append((position >= start) & (position < start + size))
        hole = masks[0].unsqueeze(2) & masks[1].unsqueeze(1)
        return z * (~hole).unsqueeze(1).to(z.dtype)

    def _flip(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        return torch.where((v["flip"] < self.flip).view(-1, 1, 1, 1), z.flip(3), z)

    def _scale(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        factors = v["scale"] * (self.scale - 1.0 / self.scale) + 1.0 / self.scale
        theta = _affine(len(z), z)
        theta[:, 0, 0], theta[:, 1, 1] = factors[:, 0], factors[:, 1]
        return _warp(z, theta)

    def _rotate(self, z: torch.Tensor, v: dict) -> torch.Tensor:
        angle = (v["angle"].flatten() - 0.5) * 2 * self.rotate * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = _affine(len(z), z)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
        return _warp(z, theta)


@functools.cache
def _groups(strategy: str) -> tuple[str, ...]:
    """The groups a strategy names, in its order."""
    return tuple(g for g in strategy.split("_") if g)


@functools.cache
def _columns(strategy: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    """``DSA.columns`` of a strategy (shared: callers must not change it)."""
    out, start = {}, 1
    for group in _groups.__wrapped__(strategy):
        for name, shape in PARAMETERS[group].items():
            out[name], start = (start, shape), start + math.prod(shape)
    return out


def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` as a tensor on ``device``: made once a device and dtype, not copied every call
    (a constant of the graph when compiled)."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, device=device, dtype=dtype)
    return _cached_constant(values, device, dtype)


@functools.lru_cache(maxsize=64)
def _cached_constant(values: tuple[float, ...], device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    return to_device(torch.tensor(values), device, dtype)


def _affine(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, 3, device=like.device, dtype=like.dtype).repeat(n, 1, 1)


def _warp(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(z.shape), align_corners=False)
    return F.grid_sample(z, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def decode_tiles(images: torch.Tensor, factor: int, size: int | None = None) -> torch.Tensor:
    """Multi-formation decode: cut each image into factor×factor tiles, upsample each to size.

    The tiles of image i come out as images i·f² … i·f² + f² − 1, row-major.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}×{w} is not divisible by the factor {factor}")
    th, tw = h // factor, w // factor
    tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(size or h, size or w), mode="bilinear", align_corners=False)


def encode_tiles(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse layout of ``decode_tiles``: downsample groups of f² images into one tiled image."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}×{w} is not divisible by the factor {factor}")
    if n % (factor * factor):
        raise ValueError(f"{n} images cannot be tiled in groups of {factor * factor}")
    small = F.interpolate(images, size=(h // factor, w // factor), mode="bilinear",
                          antialias=True, align_corners=False)
    small = small.reshape(n // factor ** 2, factor, factor, c, h // factor, w // factor)
    return small.permute(0, 3, 1, 4, 2, 5).reshape(n // factor ** 2, c, h, w)
