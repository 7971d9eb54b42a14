"""How the matching losses run the embedding network: batching, precision and compilation.

The real branch of DM and IEM carries no gradient and costs most of an iteration (~90 % on the
CPU). On a GPU every class's real batch goes through one forward, which keeps the GPU busy; on
the CPU ``CPU_CHUNK`` images at a time, which gives the same numbers (the CPU forward is
batch-invariant) with a twentieth of the activation memory of one forward. ``precision`` bf16 runs the real branch under autocast
(the synthetic branch, which carries the image gradient, stays fp32). ``compile_mode`` names a
``torch.compile`` mode for the real branch's forward. It is compiled once for every network of
the run: a network enters as a dict of its tensors (``torch.func.functional_call``), so a fresh
or perturbed network each iteration does not recompile. The compile mode ``cuda-graph`` instead
captures the whole iteration, both branches and the backward, as one CUDA graph
(``CapturedStep``; ``condense.dm.GraphedMatching``): an iteration of ~1,000 small kernels is
bound by their launches on a GPU, and a graph launches them all at once.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterable

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "cuda-graph")
COMPILED = ("default", "reduce-overhead", "max-autotune")  # the modes that compile the real branch
CPU_CHUNK = 128  # images a forward on the CPU (its activations: ~130 MB for ConvNet-3 at 32 px)


def validate(precision: str, compile_mode: str, device: torch.device | str | None = None) -> None:
    """Raise ValueError for an unknown precision or compile mode, or a CUDA graph off CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose from {sorted(PRECISIONS)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}: choose from {list(COMPILE_MODES)}")
    if compile_mode == "cuda-graph" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(f"the compile mode cuda-graph needs a CUDA device, not {device}")


class Embedder:
    """The real branch's forward: class means of embeddings, under the chosen settings."""

    def __init__(self, device: torch.device | str, precision: str = "fp32",
                 compile_mode: str = "off", one_forward: bool | None = None):
        validate(precision, compile_mode, device)
        self.device = torch.device(device)
        self.precision, self.compile_mode = precision, compile_mode
        self.one_forward = self.device.type == "cuda" if one_forward is None else one_forward

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        # no cache of cast weights on CUDA: a CUDA graph cannot capture one (and one forward
        # there uses each weight once)
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=self.device.type != "cuda")

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)`` (compiled where asked), without autocast."""
        if self.compile_mode not in COMPILED:
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


class CapturedStep:
    """``gradient(images) -> loss``, which fills ``images.grad``, captured as one CUDA graph at
    the first call and replayed at every call after.

    Whatever else the computation reads must sit in tensors that the caller refreshes in place
    before each call (``devices.copy_into``). A call returns a copy of the loss; ``images.grad``
    is the graph's own buffer, rewritten by the next call.
    """

    def __init__(self, gradient: Callable[[torch.Tensor], torch.Tensor], warmup: int = 2):
        self.gradient, self.warmup = gradient, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = self.grad = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self.capture(images)
        self.graph.replay()
        images.grad = self.grad
        return self.loss.clone()

    def capture(self, images: torch.Tensor) -> None:
        side = torch.cuda.Stream()  # warm-up runs (cuDNN's choices, workspaces) off the main stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.gradient(images)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        images.grad = None  # the gradient the graph writes is a buffer of its own
        with torch.cuda.graph(self.graph):
            self.loss = self.gradient(images)
        self.grad = images.grad
