"""DM: dataset condensation with distribution matching (Zhao & Bilen, 2023).

Each iteration draws a network, and for every class matches the mean embedding of a real batch
with that of the class's synthetic images, both under the same siamese DSA transform. The loss
is the sum over classes of the squared L2 distance between the means.
"""

from __future__ import annotations

from typing import Callable, Collection

import torch
from torch import nn

from ..augment import DSA
from ..synthetic import SyntheticSet
from .base import (CondenseResult, CondenseSettings, CondenseTask, load_checkpoint,
                   optimise_images, timed)
from .engine import Embedder
from .networks import random_network

# network_for(iteration, generator) -> a frozen embedding network for that iteration
NetworkSource = Callable[[int, torch.Generator], nn.Module]


def matching_loss(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                  members: list[torch.Tensor], dsa: DSA, net: nn.Module, images: torch.Tensor,
                  generator: torch.Generator, *, classes: Collection[int] | None = None,
                  embedder: Embedder | None = None) -> torch.Tensor:
    """Σ_c ‖mean ψ(a(real_c)) − mean ψ(a(syn_c))‖² with one siamese transform a per class.

    ``classes`` limits the sum to those classes (a process's share under torchrun); the draws of
    every class are made all the same, so the random stream does not depend on the share. Both
    branches run through ``embedder`` (default: the settings' precision and compile mode).
    """
    draws = [(indices[torch.randperm(len(indices), generator=generator)[:settings.real_batch]],
              dsa.sample(1, generator, siamese=True)) for indices in members]
    owned = [c for c in range(len(members)) if classes is None or c in classes]
    embedder = embedder or Embedder(task.device, settings.precision, settings.compile_mode)
    chosen = [draws[c][0] for c in owned]
    real = task.real_images(torch.cat(chosen)).split([len(x) for x in chosen])
    fake = synthetic.decode_classes(images, owned)
    transforms = [draws[c][1] for c in owned]
    return embedder.matching_loss(net, real, fake, (dsa, transforms))


def distribution_matching(method: str, task: CondenseTask, settings: CondenseSettings,
                          network_for: NetworkSource, saved: dict | None = None,
                          extra_state: dict | None = None) -> CondenseResult:
    """The DM loop shared by DM and IEM: one network an iteration, all classes (this process's
    under torchrun), one image step."""
    synthetic = task.initial_set(settings.ipc, settings.factor)
    members = task.class_indices()
    dsa = DSA(mean=task.mean, std=task.std)
    embedder = Embedder(task.device, settings.precision, settings.compile_mode)

    def loss_fn(images: torch.Tensor, iteration: int, generator: torch.Generator) -> torch.Tensor:
        net = network_for(iteration, generator)
        return matching_loss(task, settings, synthetic, members, dsa, net, images, generator,
                             classes=task.classes, embedder=embedder)

    history, snapshots = optimise_images(method, task, settings, synthetic, loss_fn, saved=saved,
                                         extra_state=extra_state)
    info = {"resumed_from": int(saved["iteration"]) if saved else 0,
            "seconds_before_resume": float(saved["seconds"]) if saved else 0.0}
    return CondenseResult(synthetic, history, info=info, snapshots=snapshots)


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """DM: a fresh random network every iteration, no multi-formation."""
    saved = load_checkpoint("dm", task, settings)
    return timed(lambda: distribution_matching(
        "dm", task, settings, lambda r, g: random_network(task, settings, "dm-network", r), saved))

