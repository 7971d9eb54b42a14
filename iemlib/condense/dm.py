"""DM: dataset condensation with distribution matching (Zhao & Bilen, 2023).

Each iteration draws a network, and for every class matches the mean embedding of a real batch
with that of the class's synthetic images, both under the same siamese DSA transform. The loss
is the sum over classes of the squared L2 distance between the means.
"""

from __future__ import annotations

import copy
from typing import Callable, Collection

import torch
from torch import nn

from ..augment import DSA, DSAParams
from ..devices import copy_into, to_device
from ..synthetic import SyntheticSet
from .base import (CondenseResult, CondenseSettings, CondenseTask, backward_of, load_checkpoint,
                   optimise_images, timed)
from .engine import CapturedStep, Embedder
from .networks import random_network

# network_for(iteration, generator) -> a frozen embedding network for that iteration
NetworkSource = Callable[[int, torch.Generator], nn.Module]


def class_means(embeddings: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    return torch.stack([chunk.mean(dim=0) for chunk in embeddings.split(sizes)])


Draw = tuple[torch.Tensor, DSAParams]  # a class's real batch (indices) and its siamese transform


def draw_batches(members: list[torch.Tensor], settings: CondenseSettings, dsa: DSA,
                 generator: torch.Generator) -> list[Draw]:
    """Every class's draw, in class order (the random stream does not depend on the classes a
    process owns)."""
    return [(indices[torch.randperm(len(indices), generator=generator)[:settings.real_batch]],
             dsa.sample(1, generator, siamese=True)) for indices in members]


def embedding_distance(embedder: Embedder, net: nn.Module, real: list[torch.Tensor],
                       fake: list[torch.Tensor]) -> torch.Tensor:
    """Σ_c ‖mean ψ(real_c) − mean ψ(fake_c)‖² over augmented batches, a batch a class."""
    real_means = embedder.real_means(net, real)
    fake_means = class_means(net(torch.cat(fake)), [len(f) for f in fake])
    return ((real_means - fake_means) ** 2).sum()


def selected(count: int, classes: Collection[int] | None) -> list[int]:
    """The classes of ``range(count)`` in ``classes`` (all of them for None)."""
    return [c for c in range(count) if classes is None or c in classes]


def matching_loss(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                  members: list[torch.Tensor], dsa: DSA, net: nn.Module, images: torch.Tensor,
                  generator: torch.Generator, *, classes: Collection[int] | None = None,
                  embedder: Embedder | None = None) -> torch.Tensor:
    """Σ_c ‖mean ψ(a(real_c)) − mean ψ(a(syn_c))‖² with one siamese transform a per class.

    ``classes`` limits the sum to those classes (a process's share under torchrun); the draws of
    every class are made all the same, so the random stream does not depend on the share. The
    real branch runs through ``embedder`` (default: the settings' precision and compile mode).
    """
    draws = draw_batches(members, settings, dsa, generator)
    owned = selected(len(members), classes)
    embedder = embedder or Embedder(task.device, settings.precision, settings.compile_mode)
    chosen = [draws[c][0] for c in owned]
    real = task.real_images(torch.cat(chosen)).split([len(x) for x in chosen])
    fake = synthetic.decode_classes(images, owned)
    transforms = [draws[c][1] for c in owned]
    augmented = dsa.apply_each([*real, *fake], transforms + transforms)
    return embedding_distance(embedder, net, augmented[:len(owned)], augmented[len(owned):])


# (images, network, generator) -> the loss, detached, with its image gradient in images.grad
MatchingGradient = Callable[[torch.Tensor, nn.Module, torch.Generator], torch.Tensor]


def matching_gradient(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                      members: list[torch.Tensor], dsa: DSA, *,
                      classes: Collection[int] | None = None,
                      embedder: Embedder | None = None) -> MatchingGradient:
    """``matching_loss`` and its image gradient: eagerly, or, where the compile mode is
    ``cuda-graph``, replayed from one CUDA graph (``GraphedMatching``)."""
    embedder = embedder or Embedder(task.device, settings.precision, settings.compile_mode)
    if embedder.compile_mode == "cuda-graph":
        return GraphedMatching(task, settings, synthetic, members, dsa, embedder, classes=classes)

    def gradient(images: torch.Tensor, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        return backward_of(matching_loss(task, settings, synthetic, members, dsa, net, images,
                                         generator, classes=classes, embedder=embedder), images)
    return gradient


class GraphedMatching:
    """``matching_loss`` as a computation on tensors that keep their place: each iteration's
    draws are copied into fixed buffers and its network's tensors into one template network, and
    DSA runs every group on every image (``DSA.apply_mixed``), so that no shape depends on the
    draws. On CUDA the whole iteration (both branches, the augmentation, the backward) is
    captured as one CUDA graph at the first call and replayed after; elsewhere (``capture``
    False) the same computation runs eagerly, which the tests compare with ``matching_loss``.
    """

    def __init__(self, task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                 members: list[torch.Tensor], dsa: DSA, embedder: Embedder, *,
                 classes: Collection[int] | None = None, capture: bool | None = None):
        self.task, self.settings, self.synthetic, self.members = task, settings, synthetic, members
        self.dsa, self.embedder = dsa, embedder
        self.owned = selected(len(members), classes)
        self.real_sizes = [min(settings.real_batch, len(members[c])) for c in self.owned]
        self.fake_sizes = [int((synthetic.labels == c).sum()) * synthetic.factor ** 2
                           for c in self.owned]
        device = torch.device(task.device)
        self.rows = {"real": to_device(class_rows(self.real_sizes), device),
                     "fake": to_device(class_rows(self.fake_sizes), device)}
        capture = device.type == "cuda" if capture is None else capture
        step = lambda images: backward_of(self.loss(images), images)  # noqa: E731
        self.step: Callable[[torch.Tensor], torch.Tensor] = CapturedStep(step) if capture else step
        self.inputs: dict[str, torch.Tensor] = {}
        self.net: nn.Module | None = None

    def __call__(self, images: torch.Tensor, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        draws = draw_batches(self.members, self.settings, self.dsa, generator)
        chosen = [draws[c] for c in self.owned]
        groups, values = self.dsa.stack([transform for _, transform in chosen])
        self.load({"indices": torch.cat([indices for indices, _ in chosen]), "groups": groups,
                   **values}, net)
        return self.step(images)

    def load(self, inputs: dict[str, torch.Tensor], net: nn.Module) -> None:
        """Copy this iteration's draws and network into the tensors the computation reads."""
        if self.net is None:
            self.net = copy.deepcopy(net)
            self.inputs = {k: torch.empty_like(v, device=self.task.device) for k, v in inputs.items()}
        for name, value in inputs.items():
            copy_into(self.inputs[name], value)
        with torch.no_grad():
            for kept, new in zip(self.net.state_dict().values(), net.state_dict().values()):
                copy_into(kept, new)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """The matching loss of the loaded draws and network."""
        values = {k: v for k, v in self.inputs.items() if k not in ("indices", "groups")}

        def augment(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return self.dsa.apply_mixed(x, self.inputs["groups"][rows],
                                        {k: v[rows] for k, v in values.items()})

        with torch.no_grad():
            real = augment(self.task.real_images(self.inputs["indices"]), self.rows["real"])
        fake = augment(torch.cat(self.synthetic.decode_classes(images, self.owned)), self.rows["fake"])
        return embedding_distance(self.embedder, self.net, list(real.split(self.real_sizes)),
                                  list(fake.split(self.fake_sizes)))


def class_rows(sizes: list[int]) -> torch.Tensor:
    """The row of each image's class: 0 repeated sizes[0] times, 1 sizes[1] times, …"""
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def distribution_matching(method: str, task: CondenseTask, settings: CondenseSettings,
                          network_for: NetworkSource, saved: dict | None = None,
                          extra_state: dict | None = None) -> CondenseResult:
    """The DM loop shared by DM and IEM: one network an iteration, all classes (this process's
    under torchrun), one image step."""
    synthetic = task.initial_set(settings.ipc, settings.factor)
    members = task.class_indices()
    gradient = matching_gradient(task, settings, synthetic, members,
                                 DSA(mean=task.mean, std=task.std), classes=task.classes)

    def step(images: torch.Tensor, iteration: int, generator: torch.Generator) -> torch.Tensor:
        return gradient(images, network_for(iteration, generator), generator)

    history, snapshots = optimise_images(method, task, settings, synthetic, step, saved=saved,
                                         extra_state=extra_state)
    info = {"resumed_from": int(saved["iteration"]) if saved else 0,
            "seconds_before_resume": float(saved["seconds"]) if saved else 0.0}
    return CondenseResult(synthetic, history, info=info, snapshots=snapshots)


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """DM: a fresh random network every iteration, no multi-formation."""
    saved = load_checkpoint("dm", task, settings)
    return timed(lambda: distribution_matching(
        "dm", task, settings, lambda r, g: random_network(task, settings, "dm-network", r), saved))

