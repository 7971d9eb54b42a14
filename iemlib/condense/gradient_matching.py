"""Gradient matching: what DSA (Zhao & Bilen, 2021) and IDC (Kim et al., 2022) share.

For every class c, the cross-entropy gradient of a classifier on a real batch of c is matched
with its gradient on the synthetic images of c, both under one siamese DSA transform; the loss is
a layer-wise distance between the two gradients, summed over layers and classes.

The loop runs ``iterations`` image steps, as every method does. A fresh network is drawn every
``outer_loop`` image steps and trained for ``inner_loop`` SGD steps between two image steps of
the same network (DSA: on the synthetic set; IDC: on the real training set). So image step i
uses network i // outer_loop after i % outer_loop rounds of training. The network and its
optimiser go into every checkpoint, and all randomness of step i comes from step i's generator,
so a resumed run equals an uninterrupted one. Under torchrun each process matches the gradients
of its classes, and every process trains the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DSA, DSAParams
from ..checks import require
from ..devices import module_to_device, to_device
from ..models import Classifier
from ..seeding import seeded
from ..synthetic import SyntheticSet
from ..training import fit
from .base import (CondenseResult, CondenseSettings, CondenseTask, load_checkpoint,
                   optimise_images, timed)
from .networks import random_network

METRICS = ("cos", "mse")


@dataclass(frozen=True)
class Matching:
    """What a method matches, and how."""

    metric: str                    # layer distance: "cos" (DC/DSA) or "mse" (IDC)
    min_ndim: int                  # match the parameters with at least this many dimensions
    augment: tuple[str, ...]       # DSA strategies of the siamese transform (see ``augmenter``)
    syn_max: int | None = None     # at most this many decoded synthetic images a class a step


@dataclass(frozen=True)
class NetworkTraining:
    """How the matching network is trained between image steps: SGD, as in the references."""

    on_real: bool                  # on the real training set (IDC) or the synthetic set (DSA)
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    augment: tuple[str, ...]       # DSA strategies of the per-image augmentation
    cutmix: float = 0.0            # probability that a batch is CutMix-ed (IDC: 0.5)


def layer_distance(real: torch.Tensor, syn: torch.Tensor, metric: str) -> torch.Tensor:
    """The distance of one layer's gradients.

    ``cos`` (DC): Σ over output channels (conv filters, rows of a linear weight) of
    1 − cos(real_o, syn_o), with DC's 1e-6 in the denominator. ``mse`` (IDC): Σ (real − syn)².
    """
    if real.shape != syn.shape:
        raise ValueError(f"gradient shapes differ: {tuple(real.shape)} and {tuple(syn.shape)}")
    if metric == "cos":
        if real.ndim < 2:
            raise ValueError(f"the cos distance needs a weight with output channels, got shape "
                             f"{tuple(real.shape)}")
        r, s = real.flatten(1), syn.flatten(1)
        cosine = (r * s).sum(dim=1) / (r.norm(dim=1) * s.norm(dim=1) + 1e-6)
        return (1 - cosine).sum()
    if metric == "mse":
        return (real - syn).square().sum()
    raise ValueError(f"unknown gradient distance {metric!r}: choose from {METRICS}")


def gradient_distance(real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor],
                      metric: str) -> torch.Tensor:
    """Σ over layers of ``layer_distance``."""
    if len(real) != len(syn) or not real:
        raise ValueError(f"need the same positive number of gradients, got {len(real)} and "
                         f"{len(syn)}")
    return torch.stack([layer_distance(r, s, metric) for r, s in zip(real, syn)]).sum()


def matched_parameters(net: nn.Module, min_ndim: int) -> list[nn.Parameter]:
    """The parameters whose gradients are matched.

    DC/DSA match every weight (``min_ndim`` 2: conv filters and linear weights); its distance is 0
    for biases and norm affines, so those are left out. IDC matches conv filters only (4).
    """
    chosen = [p for p in net.parameters() if p.ndim >= min_ndim]
    if not chosen:
        raise ValueError(f"the network has no parameter with {min_ndim} or more dimensions")
    return chosen


def class_gradient(net: nn.Module, parameters: Sequence[nn.Parameter], images: torch.Tensor,
                   label: int, create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """∇ of the mean cross-entropy of ``net(images)`` against class ``label``."""
    targets = torch.full((len(images),), label, dtype=torch.long, device=images.device)
    loss = F.cross_entropy(net(images), targets)
    return torch.autograd.grad(loss, parameters, create_graph=create_graph)


def augmenter(strategies: Sequence[str], task: CondenseTask) -> list[DSA]:
    """DSA transforms applied one after another, each drawing one of its groups a batch.

    DSA draws one of six groups: ``("color_crop_cutout_flip_scale_rotate",)``. IDC applies all
    of its groups to every batch: ``("color", "crop", "cutout")``.
    """
    return [DSA(strategy, mean=task.mean, std=task.std) for strategy in strategies]


def siamese_draws(transforms: Sequence[DSA], generator: torch.Generator) -> list[DSAParams]:
    """One siamese draw of every transform, in order."""
    return [transform.sample(1, generator, siamese=True) for transform in transforms]


def siamese(transforms: Sequence[DSA], real: torch.Tensor, syn: torch.Tensor,
            draws: Sequence[DSAParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches under the same draw of every transform (``siamese_draws``), in one call a
    transform (``DSA.apply_each``: on a GPU half the launches of a call a batch)."""
    for transform, params in zip(transforms, draws):
        real, syn = transform.apply_each([real, syn], [params, params])
    return real, syn


def matching_loss(task: CondenseTask, settings: CondenseSettings, synthetic: SyntheticSet,
                  members: list[torch.Tensor], matching: Matching, transforms: Sequence[DSA],
                  net: nn.Module, images: torch.Tensor, generator: torch.Generator, *,
                  classes: Collection[int] | None = None) -> torch.Tensor:
    """Σ_c D(∇ℓ(a(real_c)), ∇ℓ(a(syn_c))) with one siamese transform a per class.

    ``classes`` limits the sum to those classes (a process's share under torchrun); the draws of
    every class are made all the same, so the random stream does not depend on the share.
    """
    parameters = matched_parameters(net, matching.min_ndim)
    losses = []
    for c, indices in enumerate(members):
        chosen = indices[torch.randperm(len(indices), generator=generator)[:settings.real_batch]]
        decoded = int((synthetic.labels == c).sum()) * synthetic.factor ** 2
        keep = None
        if matching.syn_max is not None and decoded > matching.syn_max:
            keep = torch.randperm(decoded, generator=generator)[:matching.syn_max]
        draws = siamese_draws(transforms, generator)
        if classes is not None and c not in classes:
            continue
        real = task.real_images(chosen)
        syn = synthetic.decode_class(images, c)
        if keep is not None:
            syn = syn[to_device(keep, syn.device)]
        real, syn = siamese(transforms, real, syn, draws)
        g_real = [g.detach() for g in class_gradient(net, parameters, real, c)]
        g_syn = class_gradient(net, parameters, syn, c, create_graph=True)
        losses.append(gradient_distance(g_real, g_syn, matching.metric))
    return torch.stack(losses).sum()


def classifier(task: CondenseTask, settings: CondenseSettings, *parts: object) -> nn.Module:
    """A randomly initialised, trainable backbone + linear classifier, seeded by (seed, parts)."""
    backbone = random_network(task, settings, *parts)
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)
    with seeded(task.seed, *parts, "classifier"):
        model = Classifier(backbone, task.num_classes)
    return module_to_device(model, task.device).train()


def cutmix_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         generator: torch.Generator) -> torch.Tensor:
    """CutMix (Yun et al., 2019): paste a box of a shuffled batch, mix the labels by its area."""
    lam = float(torch.rand(1, generator=generator))  # CutMix's Beta(1, 1) is uniform
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    order = to_device(torch.randperm(len(x), generator=generator), x.device)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[order, :, top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    logits = model(mixed)
    return kept * F.cross_entropy(logits, y) + (1 - kept) * F.cross_entropy(logits, y[order])


class MatchingNetwork:
    """The network of image step i: network i // outer_loop after i % outer_loop rounds of
    ``inner_loop`` SGD steps, one round before each image step but its first."""

    def __init__(self, method: str, task: CondenseTask, settings: CondenseSettings,
                 training: NetworkTraining, synthetic: SyntheticSet, saved: dict | None = None):
        self.method, self.task, self.settings = method, task, settings
        self.training, self.synthetic = training, synthetic
        self.transforms = augmenter(training.augment, task)
        self.refresh = -1
        if saved is not None:  # the network and optimiser of the last step before the checkpoint
            self.start(int(saved["refresh"]))
            self.net.load_state_dict(saved["model"])
            self.optimiser.load_state_dict(saved["optimiser"])

    def start(self, refresh: int) -> None:
        self.refresh = refresh
        self.net = classifier(self.task, self.settings, self.method, "network", refresh)
        self.optimiser = torch.optim.SGD(self.net.parameters(), lr=self.training.lr,
                                         momentum=self.training.momentum,
                                         weight_decay=self.training.weight_decay)

    def for_step(self, iteration: int, images: torch.Tensor,
                 generator: torch.Generator) -> nn.Module:
        """A new network, or the current one after one more round of training."""
        refresh = iteration // self.settings.outer_loop
        if refresh != self.refresh:
            self.start(refresh)
            return self.net
        if self.training.on_real:
            data, labels = self.task.device_images, self.task.train.labels
        else:
            data, labels = self.synthetic.decode(images.detach())
        fit(self.net, data, labels, self.objective, steps=self.settings.inner_loop,
            batch_size=self.training.batch_size, generator=generator, device=self.task.device,
            optimizer=self.optimiser, progress=False)
        return self.net

    def objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy under per-image augmentation, CutMix with probability ``cutmix``."""
        for transform in self.transforms:
            x = transform.augment(x, generator)
        cutmix = self.training.cutmix
        if cutmix and float(torch.rand(1, generator=generator)) < cutmix:
            return cutmix_cross_entropy(model, x, y, generator)
        return F.cross_entropy(model(x), y)

    def state(self) -> dict:
        return {"refresh": self.refresh, "model": self.net.state_dict(),
                "optimiser": self.optimiser.state_dict()}


def validate(settings: CondenseSettings) -> None:
    """What gradient matching needs beyond ``CondenseSettings``' own checks: network steps
    between two image steps, and an image step."""
    require(settings, ">= 1", "inner_loop", "iterations")


def gradient_matching(method: str, task: CondenseTask, settings: CondenseSettings,
                      matching: Matching, training: NetworkTraining) -> CondenseResult:
    """The loop DSA and IDC share (see the module docstring)."""
    validate(settings)
    saved = load_checkpoint(method, task, settings)

    def run() -> CondenseResult:
        synthetic = task.initial_set(settings.ipc, settings.factor)
        members = task.class_indices()
        transforms = augmenter(matching.augment, task)
        network = MatchingNetwork(method, task, settings, training, synthetic,
                                  saved["matching_network"] if saved else None)
        extra: dict = {}  # written with every checkpoint

        def loss_fn(images: torch.Tensor, iteration: int,
                    generator: torch.Generator) -> torch.Tensor:
            net = network.for_step(iteration, images, generator)
            extra["matching_network"] = network.state()
            return matching_loss(task, settings, synthetic, members, matching, transforms, net,
                                 images, generator, classes=task.classes)

        history, snapshots = optimise_images(method, task, settings, synthetic, loss_fn,
                                             saved=saved, extra_state=extra)
        info = {"resumed_from": int(saved["iteration"]) if saved else 0,
                "seconds_before_resume": float(saved["seconds"]) if saved else 0.0,
                "networks": -(-settings.iterations // settings.outer_loop)}
        return CondenseResult(synthetic, history, info=info, snapshots=snapshots)

    return timed(run)
