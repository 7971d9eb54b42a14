"""Snapshots: the synthetic images as condensation goes, to browse by iteration.

The image loop (``condense.base.optimise_images``) takes one at iteration 0, at checkpoint
boundaries and at the end (``due``): uint8 pixels, the iteration, and the seconds the loop had
run. They travel in the resumable checkpoint, so a resumed run records the same
snapshots as an uninterrupted one, and ``experiment.condense_stored`` stores them beside the
condensed set as ``<set>.snapshots.pt``. The last snapshot is the stored set itself.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .synthetic import SyntheticSet, atomic_save, to_uint8

FORMAT_VERSION = 1
MOST = 20  # snapshots after iteration 0, at most (long runs skip checkpoint boundaries)


def due(done: int, iterations: int, checkpoint_every: int) -> bool:
    """Whether to take a snapshot after ``done`` iterations: at the end, and at every
    ``checkpoint_every`` boundary, or every k-th boundary where there would be more than
    ``MOST`` (the paper profile's 200,000 IDC steps checkpoint 400 times)."""
    boundaries = iterations // checkpoint_every
    every = checkpoint_every * max(1, -(-boundaries // MOST))
    return done == iterations or done % every == 0


@dataclass
class Snapshots:
    """The stored images of one condensation at a few iterations (labels shared by all)."""

    labels: torch.Tensor
    factor: int
    image_size: int
    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)   # uint8, N×C×H×W each
    check: dict | None = None   # a re-run's comparison with the stored set (snapshots_of)

    @classmethod
    def like(cls, synthetic: SyntheticSet) -> "Snapshots":
        """No snapshots yet, for the images of ``synthetic``."""
        return cls(synthetic.labels.cpu(), synthetic.factor, synthetic.image_size)

    def add(self, iteration: int, seconds: float, images: torch.Tensor) -> None:
        """Record ``images`` (float in [0, 1]) as they are after ``iteration`` iterations."""
        if len(images) != len(self.labels):
            raise ValueError(f"a snapshot needs {len(self.labels)} images, got {len(images)}")
        if self.iterations and iteration <= self.iterations[-1]:
            raise ValueError(f"snapshot iterations must increase: {iteration} after "
                             f"{self.iterations[-1]}")
        self.iterations.append(int(iteration))
        self.seconds.append(float(seconds))
        self.images.append(to_uint8(images.detach().cpu()))

    def __len__(self) -> int:
        return len(self.iterations)

    def synthetic(self, index: int = -1) -> SyntheticSet:
        """Snapshot ``index`` as a synthetic set (the last one: the condensed set)."""
        return SyntheticSet.from_state({"images": self.images[index], "labels": self.labels,
                                        "factor": self.factor, "image_size": self.image_size})

    def state(self) -> dict:
        """Plain tensors, numbers and lists (loadable with ``weights_only=True``)."""
        return {"version": FORMAT_VERSION, "labels": self.labels, "factor": self.factor,
                "image_size": self.image_size, "iterations": list(self.iterations),
                "seconds": list(self.seconds), "images": list(self.images), "check": self.check}

    @classmethod
    def from_state(cls, state: dict) -> "Snapshots":
        return cls(state["labels"], int(state["factor"]), int(state["image_size"]),
                   list(state["iterations"]), list(state["seconds"]), list(state["images"]),
                   state.get("check"))

    def save(self, path: str | os.PathLike) -> None:
        atomic_save(self.state(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Snapshots":
        try:
            return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))
        except (KeyError, TypeError, RuntimeError, EOFError, ValueError,
                pickle.UnpicklingError) as error:
            raise ValueError(f"not readable snapshots: {path} ({error})") from error


def snapshot_path(synthetic: str | os.PathLike) -> Path:
    """Where the snapshots of the condensed set stored at ``synthetic`` (``x.pt``) live."""
    return Path(synthetic).with_suffix(".snapshots.pt")


def compare(stored: torch.Tensor, rerun: torch.Tensor) -> dict:
    """How far a re-run's uint8 images are from the stored ones: share of identical pixel values
    and the largest difference (0..255)."""
    if stored.shape != rerun.shape:
        raise ValueError(f"shapes differ: {tuple(stored.shape)} and {tuple(rerun.shape)}")
    difference = (stored.int() - rerun.int()).abs()
    return {"identical": float((difference == 0).float().mean()),
            "max_difference": int(difference.max()) if difference.numel() else 0}
