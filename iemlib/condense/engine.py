"""How the matching losses run the embedding network: augmentation, batching, precision and
compilation.

The real branch of DM and IEM carries no gradient and costs most of an iteration (~90 % on the
CPU). On a GPU every class's real batch goes through one forward, which keeps the GPU busy, as
long as its largest activation stays within ``DEVICE_FORWARD_BYTES`` (every shape of CIFAR-10;
at 224 px on ResNetAP-10 a class at a time, not 17 GB a tensor); on the CPU
``CPU_CHUNK`` images at a time, which gives the same numbers (the CPU forward is
batch-invariant) with a twentieth of the activation memory of one forward. ``precision`` bf16
runs the real branch in bf16 (under autocast, or compiled with the network cast to bf16); the
synthetic branch, which carries the image gradient, stays fp32. ``compile_mode`` names a
``torch.compile`` mode for the network's forward in both branches (the synthetic branch's
backward is compiled with it). It is compiled once for every network of the run: a network
enters as a dict of its tensors (``torch.func.functional_call``), so a fresh or perturbed network
each iteration does not recompile. Compiled on a GPU, the siamese DSA runs inside the compiled
forward too (``DSA.apply_mixed``: every group on every image, each image keeping its own), which
turns the DSA calls (dozens of small kernels an iteration) into a few fused ones, and DM's loss
is one compiled function of both branches that returns the loss with its gradient with respect
to the synthetic images (``torch.func.grad_and_value``): one call an iteration, under
``reduce-overhead`` one CUDA graph, and no autograd graph through the network. On the CPU,
where the work and not the launches counts, DSA stays one eager call a group.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..augment import DSA, DSAParams
from ..devices import to_device

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# The modes that run a compiled function as CUDA graphs on a GPU (torch._inductor's
# ``list_mode_options``: ``triton.cudagraphs``).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
CPU_CHUNK = 128  # images a forward on the CPU (its activations: ~130 MB for ConvNet-3 at 32 px)
# The largest activation one real-branch forward may hold on a GPU, counted at 4 bytes an element.
# CIFAR-10's 2,560 real images through ConvNet-3: 1.3 GB, one forward. ImageNet's 1,300 at 224 px
# through ResNetAP-10: 12.8 MB an image, 17 GB a tensor where class-by-class reference code holds
# a tenth; past the budget the forwards go a class at a time, and within a class at most this
# many bytes at a time.
DEVICE_FORWARD_BYTES = 2 * 2 ** 30


def validate(precision: str, compile_mode: str) -> None:
    """Raise ValueError for an unknown precision or compile mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose from {sorted(PRECISIONS)}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile_mode!r}: choose from {list(COMPILE_MODES)}")


# a siamese DSA draw for each batch: (the augmentation, its draws)
Augmentation = tuple[DSA, Sequence[DSAParams]]


class Embedder:
    """The embedding network's forward under the chosen settings: ``real_means`` for the real
    branch's class means, ``class_means`` for the synthetic branch's (with its gradient),
    ``siamese_means`` for both under the same draws, all through ``forward``, and
    ``matching_loss`` for DM's loss of the two."""

    def __init__(self, device: torch.device | str, precision: str = "fp32",
                 compile_mode: str = "off", one_forward: bool | None = None,
                 fused_augment: bool | None = None):
        validate(precision, compile_mode)
        self.device = torch.device(device)
        self.precision, self.compile_mode = precision, compile_mode
        cuda = self.device.type == "cuda"
        self.one_forward = cuda if one_forward is None else one_forward
        self.fused_augment = compile_mode != "off" and (cuda if fused_augment is None
                                                        else fused_augment)
        self.graphed = cuda and compile_mode in CUDA_GRAPH_MODES

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None or self.compile_mode != "off":  # compiled: the forward casts itself
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, net: nn.Module, x: torch.Tensor, mixed: Mixed | None = None,
                dtype: torch.dtype | None = None, sizes: Sequence[int] | None = None
                ) -> torch.Tensor:
        """``net(x)`` (compiled where asked), without autocast. ``mixed`` = (dsa, table, rows)
        augments image i first with ``dsa.apply_mixed`` and row ``rows[i]`` of ``table``;
        ``dtype`` casts the network and the images (a compiled forward keeps the normalisation
        statistics in fp32); ``sizes`` returns the fp32 mean of each run of that many images
        instead of the embeddings (inside the compiled function, when it is one)."""
        dsa, table, rows = mixed if mixed else (None, None, None)
        specs = ((dtype, None if sizes is None else tuple(sizes)),)
        if self.compile_mode == "off":
            return _forward_all(net, dsa, specs, [x], table, [rows])[0]
        state = _state(net)
        out = compiled_function(net, state, self.compile_mode, dsa, specs)(state, [x], table,
                                                                          [rows])[0]
        # A CUDA graph's outputs are overwritten by the next compiled call that starts a new
        # step, which a caller may make before it reads them: the real branch a piece at a
        # time, then the synthetic branch. A copy keeps them.
        return out.clone() if self.graphed else out

    def real_means(self, net: nn.Module, batches: Iterable[torch.Tensor],
                   augment: Augmentation | None = None) -> torch.Tensor:
        """The fp32 mean embedding of each batch (one row a batch, augmented with ``augment``),
        with no autograd graph. On the CPU chunk by chunk, so that one chunk's activations are
        alive at a time (the same embeddings, less memory)."""
        return self._real_means(net, list(batches), augment, self._table(augment))

    def class_means(self, net: nn.Module, batches: Sequence[torch.Tensor],
                    augment: Augmentation | None = None) -> torch.Tensor:
        """The fp32 mean embedding of each batch, in one forward that carries the gradient."""
        return self._means(net, list(batches), augment, self._table(augment), None, None)

    def siamese_means(self, net: nn.Module, real: Sequence[torch.Tensor],
                      fake: Sequence[torch.Tensor], augment: Augmentation
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(``real_means``, ``class_means``) of class-matched batches, draw i augmenting both
        ``real[i]`` and ``fake[i]``: eager, in one DSA call a group for both branches; fused,
        with one table of the draws for both."""
        if not self.fused_augment:
            dsa, draws = augment
            both = dsa.apply_each([*real, *fake], [*draws, *draws])
            return self.real_means(net, both[:len(real)]), self.class_means(net, both[len(real):])
        table = self._table(augment)
        return (self._real_means(net, list(real), augment, table),
                self._means(net, list(fake), augment, table, None, None))

    def matching_loss(self, net: nn.Module, real: Sequence[torch.Tensor],
                      fake: Sequence[torch.Tensor], augment: Augmentation) -> torch.Tensor:
        """Σ_i ‖real_means_i − class_means_i‖² of ``siamese_means``, differentiable in ``fake``.
        Fused on one forward, one compiled call computes the loss and its gradient together:
        under ``reduce-overhead`` one CUDA graph an iteration, and no autograd graph through
        the network (the gradient flows back into ``fake`` from the saved result)."""
        if self.fused_augment and self.one_forward:
            state = _state(net)
            if self._chunk(net, real, state) is None:
                return self._loss_with_gradient(net, real, fake, augment, state)
        real_means, fake_means = self.siamese_means(net, real, fake, augment)
        return ((real_means - fake_means) ** 2).sum()

    def _loss_with_gradient(self, net: nn.Module, real: Sequence[torch.Tensor],
                            fake: Sequence[torch.Tensor], augment: Augmentation,
                            state: dict[str, torch.Tensor]) -> torch.Tensor:
        (x_real, r_real, s_real), (x_fake, r_fake, s_fake) = self._branch(real), self._branch(fake)
        specs = ((PRECISIONS[self.precision], s_real), (None, s_fake))
        compiled = compiled_function(net, state, self.compile_mode, augment[0], specs, loss=True)
        value, grad = compiled(state, [x_real.detach(), x_fake.detach()], self._table(augment),
                               [r_real, r_fake])
        return _WithGradient.apply(x_fake, value, grad)

    def _branch(self, batches: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        """``batches`` joined, the DSA row of each image (row i a batch) and the batch sizes."""
        sizes = tuple(len(b) for b in batches)
        return joined(batches), _repeats(sizes, self.device), sizes

    def _table(self, augment: Augmentation | None) -> torch.Tensor | None:
        """The draws' ``DSA.table`` on the device, where DSA runs inside the forward."""
        if augment is None or not self.fused_augment:
            return None
        return to_device(augment[0].table(augment[1]), self.device)

    def _real_means(self, net: nn.Module, batches: list[torch.Tensor],
                    augment: Augmentation | None, table: torch.Tensor | None) -> torch.Tensor:
        dtype = PRECISIONS[self.precision] if self.compile_mode != "off" else None
        with torch.no_grad(), self.autocast():
            return self._means(net, batches, augment, table, dtype, self._chunk(net, batches))

    def _chunk(self, net: nn.Module, batches: Sequence[torch.Tensor],
               state: dict[str, torch.Tensor] | None = None) -> int | None:
        """Images a real-branch forward, at most: ``CPU_CHUNK`` on the CPU; on one forward all
        of them (None) unless their largest activation passes ``DEVICE_FORWARD_BYTES``."""
        if not self.one_forward:
            return CPU_CHUNK
        fits = DEVICE_FORWARD_BYTES // largest_activation(net, batches[0].shape[1:], state)
        return None if sum(len(b) for b in batches) <= fits else max(1, fits)

    def _means(self, net: nn.Module, batches: list[torch.Tensor], augment: Augmentation | None,
               table: torch.Tensor | None, dtype: torch.dtype | None,
               chunk: int | None) -> torch.Tensor:
        sizes = [len(b) for b in batches]
        if augment and table is None:
            batches = augment[0].apply_each(batches, augment[1])
        mixed = None if table is None else (augment[0], table, _repeats(tuple(sizes), self.device))
        x = joined(batches)
        pieces = _pieces(sizes, chunk)
        if len(pieces) == 1:
            return self.forward(net, x, mixed, dtype, sizes)
        embeddings = torch.cat([self.forward(net, x[i:j], _rows(mixed, i, j), dtype)
                                for i, j in pieces]).float()
        return run_means(embeddings, sizes)


# (dsa, table, rows): ``dsa.table`` of the draws, and the row of each image
Mixed = tuple[DSA, torch.Tensor, torch.Tensor]


def joined(batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(batches)``, without the copy where the batches are one tensor's consecutive
    row blocks, in order and covering it (as ``split`` leaves them)."""
    base = batches[0]._base
    if (base is not None and base.is_contiguous() and all(b._base is base for b in batches)
            and batches[0].data_ptr() == base.data_ptr()
            and sum(len(b) for b in batches) == len(base)
            and all(b.is_contiguous() and b.shape[1:] == base.shape[1:] for b in batches)
            and all(a.data_ptr() + a.numel() * a.element_size() == b.data_ptr()
                    for a, b in zip(batches, batches[1:]))):
        return base
    return torch.cat(list(batches))


def _pieces(sizes: list[int], chunk: int | None) -> list[tuple[int, int]]:
    """(start, stop) of each forward: all at once, or each batch ``chunk`` images at a time."""
    if chunk is None:
        return [(0, sum(sizes))]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [(start + i, start + min(i + chunk, n)) for start, n in zip(starts, sizes)
            for i in range(0, n, chunk)]


def _rows(mixed: Mixed | None, start: int, stop: int) -> Mixed | None:
    if mixed is None:
        return None
    return mixed[0], mixed[1], mixed[2][start:stop]


@functools.lru_cache(maxsize=64)
def _repeats(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """i repeated sizes[i] times, as an index on ``device`` (made once a shape)."""
    return to_device(torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)), device)


def _forward(net: nn.Module, x: torch.Tensor, mixed: Mixed | None, dtype: torch.dtype | None,
             sizes: Sequence[int] | None, state: dict[str, torch.Tensor] | None = None
             ) -> torch.Tensor:
    """``Embedder.forward``'s computation, with ``state`` in place of the network's tensors."""
    if mixed is not None:
        dsa, table, rows = mixed
        x = dsa.apply_mixed(x, table[rows])
    if dtype is not None:
        state, x = {k: t.to(dtype) for k, t in (state or _state(net)).items()}, x.to(dtype)
    out = net(x) if state is None else torch.func.functional_call(net, state, (x,))
    return out if sizes is None else run_means(out.float(), sizes)


def _forward_all(net: nn.Module, dsa: DSA | None, specs: tuple, xs: Sequence[torch.Tensor],
                 table: torch.Tensor | None, rows: Sequence[torch.Tensor | None],
                 state: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """``_forward`` of each branch: images ``xs[i]``, table rows ``rows[i]``, (dtype, sizes)
    ``specs[i]``."""
    return tuple(_forward(net, x, None if r is None else (dsa, table, r), dtype, sizes, state)
                 for x, r, (dtype, sizes) in zip(xs, rows, specs))


_LARGEST: dict[tuple, int] = {}


def largest_activation(net: nn.Module, image_shape: Sequence[int],
                       state: dict[str, torch.Tensor] | None = None) -> int:
    """Bytes, at 4 an element, of the largest output of ``net``'s leaf modules for one image of
    ``image_shape`` (C × H × W): traced on the meta device, once a structure and shape
    (``state``: ``net``'s tensors by name, where the caller has them)."""
    state = state or _state(net)
    key = (type(net), tuple(image_shape), tuple(t.shape for t in state.values()))
    if key not in _LARGEST:
        sizes: list[int] = []
        hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(out.numel()))
                 for m in net.modules() if next(m.children(), None) is None]
        meta = {k: torch.empty_like(t, device="meta") for k, t in state.items()}
        try:
            torch.func.functional_call(net, meta, (torch.empty(1, *image_shape, device="meta"),))
        finally:
            for hook in hooks:
                hook.remove()
        _LARGEST[key] = 4 * max(sizes)
    return _LARGEST[key]


def run_means(embeddings: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The mean of each run of ``sizes[i]`` consecutive rows."""
    return torch.stack([e.mean(dim=0) for e in embeddings.split(list(sizes))])


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s tensors by name, as ``functional_call`` takes them, frozen parameters detached:
    dynamo takes an ``nn.Parameter`` input for a static one, whose address a CUDA graph keeps,
    so that every fresh network would record the graph again."""
    parameters = {k: p if p.requires_grad else p.detach() for k, p in net.named_parameters()}
    return {**parameters, **dict(net.named_buffers())}


def _matching(net: nn.Module, dsa: DSA | None, specs: tuple, xs: Sequence[torch.Tensor],
              table: torch.Tensor | None, rows: Sequence[torch.Tensor | None],
              state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """DM's loss Σ_i ‖mean real_i − mean fake_i‖² of the branches ``xs`` = (real, fake) of
    ``_forward_all``, and its gradient with respect to the fake images."""
    def loss(fake: torch.Tensor) -> torch.Tensor:
        real_means, fake_means = _forward_all(net, dsa, specs, [xs[0], fake], table, rows, state)
        return ((real_means - fake_means) ** 2).sum()

    grad, value = torch.func.grad_and_value(loss)(xs[1])
    return value, grad


class _WithGradient(torch.autograd.Function):
    """``value``, a function of ``x`` whose gradient ``grad`` was computed with it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        # copies: a CUDA graph's outputs are overwritten by its next replay
        ctx.save_for_backward(grad.clone())
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None


# One compiled function a (mode, augmentation, branches, network structure, loss or forward),
# shared by every Embedder of the process: dynamo guards on the template a compiled function
# closes over, so a template of its own per run would recompile for each run and, past dynamo's
# recompile limit, fall back to eager.
_COMPILED: dict[tuple, Callable[..., tuple[torch.Tensor, ...]]] = {}


def compiled_function(net: nn.Module, state: dict[str, torch.Tensor], mode: str,
                      dsa: DSA | None, specs: tuple, loss: bool = False
                      ) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``(state, images, table, rows) -> _forward_all`` (``loss``: ``_matching``) compiled with
    ``mode`` for networks shaped like ``net`` and branches ``specs``: every network is swapped
    into a copy of the first one's structure (a copy, so that no network's own tensors are the
    template's)."""
    key = (mode, type(net), repr(dsa), specs, loss,
           tuple((name, t.shape, t.dtype, t.device) for name, t in state.items()))
    if key not in _COMPILED:
        template, function = copy.deepcopy(net), _matching if loss else _forward_all

        def call(tensors: dict, xs: list[torch.Tensor], table: torch.Tensor | None,
                 rows: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
            return function(template, dsa, specs, xs, table, rows, tensors)

        _COMPILED[key] = torch.compile(call, mode=mode, dynamic=False)
    return _COMPILED[key]
