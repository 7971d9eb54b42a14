"""The one training loop every model in the library is trained with, and batched inference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import require
from .devices import to_device

# objective(model, images in [0, 1], labels, generator) -> scalar loss
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
# steps between two reads of the loss for the progress bar: a read waits for a GPU to finish the
# step, so the host could not queue the next one meanwhile
LOSS_EVERY = 25


@dataclass(frozen=True)
class TrainSettings:
    """How an evaluated network (hashing net or classifier) is built and trained with ``fit``."""

    backbone: str = "convnet"
    steps: int = 400
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        require(self, ">= 1", "steps", "batch_size")
        require(self, "> 0", "lr")
        require(self, ">= 0", "weight_decay")


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → float in [0, 1]; float images pass through."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` batches of indices, walking through fresh permutations of range(n)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < min(batch_size, n):
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        take = min(batch_size, n)
        yield order[:take]
        order = order[take:]


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, objective: Objective, *,
        steps: int, batch_size: int, lr: float = 1e-3, weight_decay: float = 0.0,
        generator: torch.Generator, device: torch.device | str = "cpu",
        extra_parameters: list[nn.Parameter] | None = None, progress: bool = True,
        desc: str = "train", optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
    """Adam with a cosine schedule for ``steps`` mini-batches; returns the loss of every step,
    a tensor on ``device`` (reading it waits for a GPU to finish; ``fit`` itself reads one loss
    every ``LOSS_EVERY`` steps for the progress bar, and none without it).

    ``images`` go to ``device`` once, as they are (uint8 stays uint8), and each batch is
    gathered and converted there; a caller that trains on one large set call after call keeps
    it there (``CondenseTask.device_images``). ``optimizer`` continues an existing optimiser
    instead (e.g. SGD whose momentum carries over from call to call), at its own learning rate
    and without a schedule; ``lr``, ``weight_decay`` and ``extra_parameters`` are then not used.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    model.to(device).train()
    schedule = None
    if optimizer is None:
        parameters = list(model.parameters()) + list(extra_parameters or [])
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses = []  # on the device
    bar = tqdm(batch_indices(len(labels), batch_size, steps, generator), total=steps, desc=desc,
               disable=not progress, leave=False)
    images = to_device(images, device)
    for step, index in enumerate(bar, 1):
        x = as_float(images[to_device(index, device)])
        loss = objective(model, x, to_device(labels[index], device), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.detach())
        if progress and step % LOSS_EVERY == 0:
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}", refresh=False)
    model.eval()
    return torch.stack(losses)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 500,
            device: torch.device | str = "cpu", progress: bool = False,
            desc: str = "encode") -> torch.Tensor:
    """Run ``model`` over ``images`` in batches without gradients; outputs on the CPU.

    A batch goes to the device as it is stored (uint8: a quarter of float's bytes), without a
    wait, and is converted there; the outputs come back in one copy at the end."""
    model.to(device).eval()
    chunks = range(0, len(images), batch_size)
    outputs = [model(as_float(to_device(images[i:i + batch_size], device))).float()
               for i in tqdm(chunks, desc=desc, disable=not progress, leave=False)]
    return torch.cat(outputs).cpu()
