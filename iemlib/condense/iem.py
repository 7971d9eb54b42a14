"""IEM: information-intensive feature-embedding matching (Feng et al.).

IEM = DM in the feature-embedding space
    + network augmentation: every iteration perturbs the initial network,
      θ_aug = θ_init + α·d with d Gaussian rescaled to the weights' norm (Eq. 4);
    + data augmentation: multi-formation, f×f real images assembled into each synthetic image
      (Eq. 5), decoded back to f² training images.

What θ_init is, the paper leaves open; ``settings.network`` chooses it:
``fresh`` a new random network each iteration (the literal DM reading), ``fixed`` one random
network, ``pool`` a pool of random networks, ``early`` a pool of networks briefly trained on the
real training set (the early-stage models of model augmentation [21]).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..devices import to_device
from .base import CondenseResult, CondenseSettings, CondenseTask, load_checkpoint, timed
from .dm import distribution_matching
from .networks import early_network, freeze, random_network

PERTURB_MODES = ("none", "filter", "layer", "element")
NETWORK_SOURCES = ("fresh", "fixed", "pool", "early")


def perturbation(weight: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian direction d scaled to the weight's norm (per filter, per layer or per element).

    Weights with fewer than two dimensions (biases, norm affines) get no perturbation, as in
    filter-normalised loss-landscape directions.
    """
    if mode == "none" or not perturbed(weight):
        return torch.zeros_like(weight)
    d = to_device(torch.randn(weight.shape, generator=generator), weight.device, weight.dtype)
    if mode == "filter":
        dims = tuple(range(1, weight.ndim))
        scale = torch.linalg.vector_norm(weight, dim=dims, keepdim=True)
        return d * scale / torch.linalg.vector_norm(d, dim=dims, keepdim=True)
    if mode == "layer":
        return d * weight.norm() / d.norm()
    if mode == "element":
        return d * weight.abs()
    raise ValueError(f"unknown perturbation mode {mode!r}: choose from {PERTURB_MODES}")


def perturbed(weight: torch.Tensor) -> bool:
    """Whether ``perturbation`` moves a weight: two dimensions or more."""
    return weight.ndim >= 2


def perturb(net: nn.Module, alpha: float, mode: str, generator: torch.Generator,
            in_place: bool = False) -> nn.Module:
    """A frozen copy of ``net`` with θ + α·d (``net`` itself, ``in_place``: no copy of a
    network that is used once). Weights that ``perturbation`` leaves alone are not touched (no
    zeros added: two kernels a bias or norm weight an iteration on a GPU)."""
    augmented = net if in_place else copy.deepcopy(net)
    with torch.no_grad():
        for parameter in augmented.parameters():
            if mode != "none" and perturbed(parameter):
                parameter.add_(perturbation(parameter, mode, generator), alpha=alpha)
    return freeze(augmented)


def initial_networks(task: CondenseTask, settings: CondenseSettings,
                     saved: dict | None = None) -> list[nn.Module]:
    """The θ_init networks (none for ``fresh``); a resumed run takes them from its checkpoint."""
    if settings.network not in NETWORK_SOURCES:
        raise ValueError(f"unknown network source {settings.network!r}: choose from {NETWORK_SOURCES}")
    count = {"fresh": 0, "fixed": 1}.get(settings.network, settings.pool_size)
    if settings.network == "early" and saved is None:
        return [early_network(task, settings, i) for i in range(count)]
    networks = [random_network(task, settings, "iem-network", i) for i in range(count)]
    for net, state in zip(networks, saved["networks"] if saved else []):
        net.load_state_dict(state)  # trained networks come back exactly as they were
    return networks


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """IEM with the settings' network source, perturbation (mode, α) and factor."""
    if settings.perturb not in PERTURB_MODES:
        raise ValueError(f"unknown perturbation mode {settings.perturb!r}: choose from {PERTURB_MODES}")
    saved = load_checkpoint("iem", task, settings)

    def run() -> CondenseResult:
        networks = initial_networks(task, settings, saved)
        unperturbed = settings.perturb == "none" or settings.alpha == 0
        # the networks to perturb, on the CPU: an iteration's draws are host work
        hosts = [] if unperturbed else [copy.deepcopy(net).cpu() for net in networks]

        def network_for(iteration: int, generator: torch.Generator) -> nn.Module:
            if networks:
                k = int(torch.randint(len(networks), (1,), generator=generator))
                if unperturbed:
                    return networks[k]
                return perturb(hosts[k], settings.alpha, settings.perturb, generator)
            base = random_network(task, settings, "iem-network", "fresh", iteration, device="cpu")
            if unperturbed:
                return base
            return perturb(base, settings.alpha, settings.perturb, generator, in_place=True)

        extra = {"networks": [net.state_dict() for net in networks]}
        return distribution_matching("iem", task, settings, network_for, saved, extra)

    return timed(run)
