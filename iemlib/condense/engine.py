"""How the matching losses run the embedding network: batching, precision and compilation.

The real branch of DM and IEM carries no gradient and costs most of an iteration (~90 % on the
CPU). On a GPU every class's real batch goes through one forward, which keeps the GPU busy; on
the CPU ``CPU_CHUNK`` images at a time, which gives the same numbers (the CPU forward is
batch-invariant) with a twentieth of the activation memory of one forward. ``precision`` bf16
runs the real branch under autocast (the synthetic branch, which carries the image gradient,
stays fp32). ``compile_mode`` names a ``torch.compile`` mode for the network's forward in both
branches (the synthetic branch's backward is compiled with it). It is compiled once for every
network of the run: a network enters as a dict of its tensors (``torch.func.functional_call``),
so a fresh or perturbed network each iteration does not recompile.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterable

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
CPU_CHUNK = 128  # images a forward on the CPU (its activations: ~130 MB for ConvNet-3 at 32 px)


def validate(precision: str, compile_mode: str) -> None:
    """Raise ValueError for an unknown precision or compile mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose from {sorted(PRECISIONS)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}: choose from {list(COMPILE_MODES)}")


class Embedder:
    """The embedding network's forward under the chosen settings: ``forward`` for either branch,
    ``real_means`` for the real branch's class means."""

    def __init__(self, device: torch.device | str, precision: str = "fp32",
                 compile_mode: str = "off", one_forward: bool | None = None):
        validate(precision, compile_mode)
        self.device = torch.device(device)
        self.precision, self.compile_mode = precision, compile_mode
        self.one_forward = self.device.type == "cuda" if one_forward is None else one_forward

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)`` (compiled where asked), without autocast."""
        if self.compile_mode == "off":
            return net(x)
        state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        return compiled_forward(net, state, self.compile_mode)(state, x)

    def real_means(self, net: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
        """The fp32 mean embedding of each batch (one row a batch), with no autograd graph.

        On the CPU chunk by chunk, so that one chunk's activations are alive at a time.
        """
        with torch.no_grad(), self.autocast():
            if not self.one_forward:  # chunk by chunk: the same embeddings, less memory
                return torch.stack([torch.cat([self.forward(net, chunk).float()
                                               for chunk in b.split(CPU_CHUNK)]).mean(dim=0)
                                    for b in batches])
            batches = list(batches)
            embeddings = self.forward(net, torch.cat(batches)).float()
            return torch.stack([e.mean(dim=0) for e in embeddings.split([len(b) for b in batches])])


# One compiled forward a (compile mode, network structure), shared by every Embedder of the
# process: dynamo guards on the template a compiled function closes over, so a template of its
# own per run would recompile for each run and, past dynamo's recompile limit, fall back to eager.
_COMPILED: dict[tuple, Callable[[dict, torch.Tensor], torch.Tensor]] = {}


def compiled_forward(net: nn.Module, state: dict[str, torch.Tensor],
                     mode: str) -> Callable[[dict, torch.Tensor], torch.Tensor]:
    """``(state, images) -> net's output`` compiled with ``mode`` for networks shaped like
    ``net``: every network is swapped into a copy of the first one's structure (a copy, so that
    no network's own tensors are the template's)."""
    key = (mode, type(net), tuple((name, t.shape, t.dtype, t.device) for name, t in state.items()))
    if key not in _COMPILED:
        template = copy.deepcopy(net)

        def call(tensors: dict, images: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, tensors, (images,))

        _COMPILED[key] = torch.compile(call, mode=mode, dynamic=False)
    return _COMPILED[key]
