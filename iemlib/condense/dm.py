"""DM: dataset condensation with distribution matching (Zhao & Bilen, 2023).

Each iteration draws a network, and for every class matches the mean embedding of a real batch
with that of the class's synthetic images, both under the same siamese DSA transform. The loss
is the sum over classes of the squared L2 distance between the means.
"""

from __future__ import annotations

from typing import Callable, Collection

import torch
from torch import nn

from ..augment import DSA, DSAParams
from ..devices import module_to_device
from ..synthetic import SyntheticSet
from .base import (CondenseResult, CondenseSettings, CondenseTask, load_checkpoint,
                   optimise_images, timed)
from .engine import Embedder
from .networks import random_network

# network_for(iteration, generator) -> a frozen embedding network for that iteration, on the CPU
# (or already on the task's device); CPU work drawing from the generator only, as it may run on a
# worker thread (``optimise_images``' draws)
NetworkSource = Callable[[int, torch.Generator], nn.Module]
# each class's draws: the indices of its real batch, and its siamese DSA transform
ClassDraws = list[tuple[torch.Tensor, DSAParams]]


def class_draws(members: list[torch.Tensor], real_batch: int, dsa: DSA,
                generator: torch.Generator) -> ClassDraws:
    """Every class's real batch (``real_batch`` of its ``members``) and transform, class by class."""
    return [(indices[torch.randperm(len(indices), generator=generator)[:real_batch]],
             dsa.sample(1, generator, siamese=True)) for indices in members]


def matching_loss(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                  members: list[torch.Tensor], dsa: DSA, net: nn.Module, images: torch.Tensor,
                  generator: torch.Generator, *, classes: Collection[int] | None = None,
                  embedder: Embedder | None = None) -> torch.Tensor:
    """Σ_c ‖mean ψ(a(real_c)) − mean ψ(a(syn_c))‖² with one siamese transform a per class:
    ``drawn_matching_loss`` of the ``class_draws`` from ``generator``."""
    draws = class_draws(members, settings.real_batch, dsa, generator)
    return drawn_matching_loss(task, settings, synthetic, draws, dsa, net, images,
                               classes=classes, embedder=embedder)


def drawn_matching_loss(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                        draws: ClassDraws, dsa: DSA, net: nn.Module, images: torch.Tensor, *,
                        classes: Collection[int] | None = None,
                        embedder: Embedder | None = None) -> torch.Tensor:
    """DM's loss on the classes' ``draws``. ``classes`` limits the sum to those classes (a
    process's share under torchrun); every class's draws are made all the same, so the random
    stream does not depend on the share. Both branches run through ``embedder`` (default: the
    settings' precision and compile mode)."""
    owned = [c for c in range(len(draws)) if classes is None or c in classes]
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
    under torchrun), one image step. An iteration's draws (its network, then every class's real
    batch and transform) are host work, made ahead on worker threads on a GPU."""
    synthetic = task.initial_set(settings.ipc, settings.factor)
    members = task.class_indices()
    dsa = DSA(mean=task.mean, std=task.std)
    embedder = Embedder(task.device, settings.precision, settings.compile_mode)

    def draw(iteration: int, generator: torch.Generator) -> tuple[nn.Module, ClassDraws]:
        return (network_for(iteration, generator),
                class_draws(members, settings.real_batch, dsa, generator))

    def loss_fn(images: torch.Tensor, iteration: int,
                drawn: tuple[nn.Module, ClassDraws]) -> torch.Tensor:
        net, draws = drawn
        return drawn_matching_loss(task, settings, synthetic, draws, dsa,
                                   module_to_device(net, task.device), images,
                                   classes=task.classes, embedder=embedder)

    history, snapshots = optimise_images(method, task, settings, synthetic, loss_fn, draw=draw,
                                         saved=saved, extra_state=extra_state)
    info = {"resumed_from": int(saved["iteration"]) if saved else 0,
            "seconds_before_resume": float(saved["seconds"]) if saved else 0.0}
    return CondenseResult(synthetic, history, info=info, snapshots=snapshots)


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """DM: a fresh random network every iteration, no multi-formation."""
    saved = load_checkpoint("dm", task, settings)

    def network_for(iteration: int, generator: torch.Generator) -> nn.Module:
        return random_network(task, settings, "dm-network", iteration, device="cpu")

    return timed(lambda: distribution_matching("dm", task, settings, network_for, saved))
