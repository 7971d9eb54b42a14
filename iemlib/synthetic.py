"""SyntheticSet: a parameterised synthetic training set.

The stored images are learnable tensors in [0, 1]. With a multi-formation factor f each stored
image holds f×f tiles, and ``decode`` turns it into f² full-size training images (IDC, and the
"data augmentation" of IEM's Eq. 5). With f = 1 the stored images are the training images.
"""

from __future__ import annotations

import os
import pickle
from typing import Sequence

import torch

from .augment import decode_tiles, encode_tiles
from .devices import to_device
from .files import atomic_write

FORMAT_VERSION = 1


class SyntheticSet:
    """``ipc`` stored images a class (class-major order), their labels and the factor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, factor: int = 1,
                 image_size: int | None = None):
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images must be N×C×H×W with N labels, got {tuple(images.shape)} "
                             f"and {tuple(labels.shape)} labels")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.images = images.float()
        self.labels = labels.long()
        self.factor = factor
        self.image_size = image_size or images.shape[-1]

    @classmethod
    def from_real(cls, images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int,
                  generator: torch.Generator, factor: int = 1) -> "SyntheticSet":
        """Initialise from randomly chosen real images: ipc·f² a class, tiled f×f per image."""
        stored, stored_labels = [], []
        per_image = factor * factor
        for c in range(num_classes):
            members = torch.nonzero(labels == c).flatten()
            need = ipc * per_image
            if need > len(members):
                raise ValueError(f"class {c} has {len(members)} images; {ipc} a class with factor "
                                 f"{factor} needs {need}")
            chosen = members[torch.randperm(len(members), generator=generator)[:need]]
            pixels = images[chosen].float() / (255.0 if images.dtype == torch.uint8 else 1.0)
            stored.append(encode_tiles(pixels, factor).clamp(0, 1))
            stored_labels.append(torch.full((ipc,), c, dtype=torch.long))
        return cls(torch.cat(stored), torch.cat(stored_labels), factor, images.shape[-1])

    @property
    def ipc(self) -> int:
        """Stored images per class."""
        return len(self.labels) // max(1, int(self.labels.max()) + 1)

    def __len__(self) -> int:
        return len(self.labels)

    def decode(self, images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images (N·f² × C × S × S) and their labels.

        ``images`` lets a caller decode a differentiable copy (e.g. one class's slice).
        """
        stored = self.images if images is None else images
        return decode_tiles(stored, self.factor, self.image_size), self.labels.repeat_interleave(self.factor ** 2)

    def decode_class(self, images: torch.Tensor, c: int) -> torch.Tensor:
        """The decoded training images of class c from a stored tensor laid out like ``images``."""
        return decode_tiles(_rows(images, self.labels, c), self.factor, self.image_size)

    def decode_classes(self, images: torch.Tensor, classes: Sequence[int]) -> list[torch.Tensor]:
        """``[decode_class(images, c) for c in classes]``, decoded in one call."""
        decoded, per = decode_tiles(images, self.factor, self.image_size), self.factor ** 2
        bounds = _class_bounds(self.labels, max(classes, default=0) + 1)
        if bounds is None:
            return [_rows(decoded, self.labels, c, per) for c in classes]
        return [decoded[bounds[c] * per:bounds[c + 1] * per] for c in classes]

    def state(self, dtype: torch.dtype = torch.float32) -> dict:
        """A dict of plain tensors and numbers (loadable with ``weights_only=True``)."""
        images = self.images.detach().cpu()
        images = to_uint8(images) if dtype == torch.uint8 else images.to(dtype)
        return {"version": FORMAT_VERSION, "images": images, "labels": self.labels.cpu(),
                "factor": self.factor, "image_size": self.image_size}

    @classmethod
    def from_state(cls, state: dict) -> "SyntheticSet":
        images = state["images"]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return cls(images, state["labels"], int(state["factor"]), int(state["image_size"]))

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
        """Write atomically; ``dtype`` uint8 or float16 gives a compact file for display."""
        atomic_save(self.state(dtype), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticSet":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return cls.from_state(state)
        except (KeyError, TypeError, RuntimeError, EOFError, ValueError,
                pickle.UnpicklingError) as error:
            raise ValueError(f"not a readable synthetic set: {path} ({error})") from error


def _class_bounds(labels: torch.Tensor, classes: int) -> list[int] | None:
    """Where the rows of each of at least ``classes`` classes start, and the end, when
    ``labels`` (on the CPU) is sorted, as a stored set lays them out (a few tensor ops, not a
    few a class); None otherwise."""
    if len(labels) == 0 or bool((labels[1:] < labels[:-1]).any()):
        return None
    return [0, *torch.bincount(labels, minlength=classes).cumsum(0).tolist()]


def _rows(images: torch.Tensor, labels: torch.Tensor, c: int, per: int = 1) -> torch.Tensor:
    """The rows of ``images`` that stored images labelled c decode to, ``per`` each (``labels``
    on the CPU: no wait for a GPU); a slice where they are contiguous, as a stored set lays
    them out."""
    rows = torch.nonzero(labels == c).flatten()
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return images[int(rows[0]) * per:(int(rows[-1]) + 1) * per]
    rows = (rows.view(-1, 1) * per + torch.arange(per)).flatten()
    return images[to_device(rows, images.device)]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] → uint8 (rounded; values outside are clamped)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda stream: torch.save(obj, stream))
