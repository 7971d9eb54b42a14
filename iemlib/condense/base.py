"""What every condensation method shares: settings, the task, and the image optimiser loop.

The loop is resumable: every ``checkpoint_every`` iterations it writes the synthetic images,
the optimiser state, the loss history, the snapshots (``iemlib.snapshots``) and any method state
atomically, and each iteration's randomness is a pure function of (seed, iteration), so a resumed
run reaches exactly the result of an uninterrupted one.

An iteration's host draws (DM/IEM: its network, real batches and augmentation) depend on the
seed and the iteration alone, so on a GPU they are made a few iterations ahead on worker threads
(``CondenseTask.draws_ahead``) while the device runs, with the same result.

Under torchrun (``iemlib.distributed``) each process computes the loss terms of its classes
(``CondenseTask.classes``); the loop sums the image gradient and the loss over the processes, so
every process takes the same image step, and only the main process writes checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..checks import require
from ..data import Split
from ..devices import asynchronous, to_device
from ..distributed import all_reduce_, is_main, owned_classes
from ..lookahead import made_ahead
from ..seeding import generator
from ..snapshots import Snapshots, due
from ..synthetic import SyntheticSet, atomic_save
from ..training import as_float


@dataclass(frozen=True)
class CondenseSettings:
    """Knobs of the condensation methods (each method reads the ones it needs)."""

    ipc: int
    iterations: int = 200
    real_batch: int = 64
    lr: float = 1.0            # image step size in normalised units (DM's 1.0)
    momentum: float = 0.5
    factor: int = 1            # multi-formation factor (IEM's data augmentation)
    network: str = "fresh"     # θ_init: fresh | fixed | pool | early (see condense.iem)
    pool_size: int = 4
    early_steps: int = 50
    perturb: str = "none"      # network augmentation: none | filter | layer | element
    alpha: float = 0.0
    backbone: str = "convnet"
    checkpoint_every: int = 25
    outer_loop: int = 1        # gradient matching (DSA, IDC): image steps per network
    inner_loop: int = 1        # gradient matching: network SGD steps between two image steps
    precision: str = "fp32"    # DM/IEM real branch: fp32 | bf16 (see condense.engine)
    compile_mode: str = "off"  # DM/IEM embedding forward: off, or a torch.compile mode

    def __post_init__(self) -> None:
        require(self, ">= 1", "ipc", "real_batch", "factor", "pool_size", "checkpoint_every",
                "outer_loop")
        require(self, ">= 0", "iterations", "early_steps", "inner_loop", "alpha")
        require(self, "> 0", "lr")
        require(self, "in [0, 1)", "momentum")


# Iterations whose draws are made ahead on a GPU, on as many threads. A fresh ConvNet-3 and its
# filter perturbation are 600k draws from CPU generators: with the real batches ~3 ms an
# iteration on the 2-core CPU machine, where a compiled DM step took 7 ms on an H200.
GPU_DRAW_AHEAD = 2


@dataclass
class CondenseTask:
    """The data and run context a method condenses."""

    train: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int = 0
    device: torch.device | str = "cpu"
    progress: bool = True
    checkpoint: Path | None = None
    resume: bool = False
    stop_after: int | None = None   # stop (as if killed) after this many iterations; for tests
    draw_ahead: int | None = None   # iterations drawn ahead on worker threads (None: by device)

    def __post_init__(self) -> None:
        owned_classes(self.num_classes)  # a launch of more processes than classes fails here

    @property
    def classes(self) -> range:
        """The classes whose loss terms this process computes: all of them, or its share of a
        torchrun launch (``iemlib.distributed``)."""
        return owned_classes(self.num_classes)

    @property
    def draws_ahead(self) -> int:
        """How many iterations' host draws the image loop makes ahead on worker threads while
        the device runs (``iemlib.lookahead``; the same draws either way): by default
        ``GPU_DRAW_AHEAD`` where the device runs asynchronously (a GPU), else none."""
        if self.draw_ahead is not None:
            return self.draw_ahead
        return GPU_DRAW_AHEAD if asynchronous(self.device) else 0

    @cached_property
    def device_images(self) -> torch.Tensor:
        """The training images on the task's device, as stored (uint8), copied there once: a
        batch is gathered and converted there, not on the host."""
        return self.train.images.to(self.device)

    def real_images(self, chosen: torch.Tensor) -> torch.Tensor:
        """Training images ``chosen`` as float in [0, 1] on the task's device."""
        return as_float(self.device_images[to_device(chosen, self.device)])

    def class_indices(self) -> list[torch.Tensor]:
        return [torch.nonzero(self.train.labels == c).flatten() for c in range(self.num_classes)]

    def initial_set(self, ipc: int, factor: int = 1) -> SyntheticSet:
        """Random real images (tiled when factor > 1); the same draw for every method."""
        return SyntheticSet.from_real(self.train.images, self.train.labels, ipc, self.num_classes,
                                      generator(self.seed, "init", factor), factor)


@dataclass
class CondenseResult:
    synthetic: SyntheticSet
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    snapshots: Snapshots | None = None   # methods that optimise images (see optimise_images)


class Interrupted(RuntimeError):
    """Raised when ``stop_after`` ends a run early (it simulates a killed process)."""


def load_checkpoint(method: str, task: CondenseTask, settings: CondenseSettings) -> dict | None:
    """The saved state of this exact run, or None when there is nothing to resume."""
    if not (task.resume and task.checkpoint and task.checkpoint.exists()):
        return None
    try:
        state = torch.load(task.checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise ValueError(f"corrupt checkpoint {task.checkpoint}: {error}") from error
    if state.get("fingerprint") != fingerprint(method, task, settings):
        raise ValueError(f"checkpoint {task.checkpoint} belongs to another configuration; "
                         "delete it or run without --resume")
    return state


def fingerprint(method: str, task: CondenseTask, settings: CondenseSettings) -> str:
    """Identifies a run: method, settings, seed and the exact training images."""
    digest = hash_tensor(task.train.indices)
    return json.dumps({"method": method, "seed": task.seed, "train": digest, **asdict(settings)},
                      sort_keys=True)


def hash_tensor(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.cpu().numpy().tobytes()).hexdigest()


# draw(iteration, generator) -> the iteration's host-side draws (CPU work from the generator only)
Draw = Callable[[int, torch.Generator], Any]
# loss_fn(images, iteration, drawn) -> the iteration's loss
LossFn = Callable[[torch.Tensor, int, Any], torch.Tensor]


def optimise_images(method: str, task: CondenseTask, settings: CondenseSettings,
                    synthetic: SyntheticSet, loss_fn: LossFn, *, draw: Draw | None = None,
                    saved: dict | None = None, extra_state: dict[str, Any] | None = None
                    ) -> tuple[list[float], Snapshots]:
    """SGD with momentum on the stored images for ``settings.iterations`` iterations.

    ``loss_fn(images, iteration, drawn)`` returns the loss of one iteration (of this process's
    classes under torchrun: gradient and loss are summed over the processes), where ``drawn`` is
    ``draw(iteration, generator)`` with the iteration's generator, made ahead on worker threads
    where ``task.draws_ahead`` (without ``draw``: the generator itself). The gradient is
    scaled by std² per channel, so a step of ``lr`` in [0, 1] pixels equals a step of ``lr`` on
    normalised images (where DM's lr 1.0 was tuned). Images are clamped to [0, 1] after each step.
    Returns the loss history and the snapshots (``snapshots.due``: iteration 0, checkpoint
    boundaries, the end) with the seconds of this loop (a resumed run's included).
    """
    images = synthetic.images.clone().to(task.device).requires_grad_(True)
    optimiser = torch.optim.SGD([images], lr=settings.lr, momentum=settings.momentum)
    scale = torch.tensor(task.std, device=task.device).view(1, -1, 1, 1) ** 2
    history: list[float] = []
    pending: list[torch.Tensor] = []  # this stretch's losses, still on the device
    start, seconds_before = 0, 0.0
    snapshots = Snapshots.like(synthetic)
    if saved is not None:
        with torch.no_grad():
            images.copy_(saved["images"])
        optimiser.load_state_dict(saved["optimiser"])
        history, start = list(saved["history"]), int(saved["iteration"])
        seconds_before = float(saved["seconds"])
        if "snapshots" in saved:  # checkpoints written before snapshots existed have none
            snapshots = Snapshots.from_state(saved["snapshots"])
    if start == 0:
        snapshots.add(0, 0.0, images)
    clock = time.perf_counter()
    key = fingerprint(method, task, settings)
    bar = tqdm(range(start, settings.iterations), initial=start, total=settings.iterations,
               desc=f"{method} condensation", disable=not task.progress, leave=False)

    def drawn_for(iteration: int) -> Any:
        stream = generator(task.seed, method, "iteration", iteration)
        return stream if draw is None else draw(iteration, stream)

    def save(done: int, seconds: float) -> None:
        if due(done, settings.iterations, settings.checkpoint_every):
            snapshots.add(done, seconds, images)
        if task.checkpoint and is_main():
            atomic_save({"fingerprint": key, "iteration": done, "images": images.detach().cpu(),
                         "optimiser": optimiser.state_dict(), "history": history,
                         "seconds": seconds, "snapshots": snapshots.state(),
                         **(extra_state or {})}, task.checkpoint)

    ahead = task.draws_ahead if draw is not None else 0
    with closing(made_ahead(drawn_for, range(start, settings.iterations), ahead)) as draws:
        for iteration, drawn in zip(bar, draws):
            if task.stop_after is not None and iteration >= task.stop_after:
                raise Interrupted(f"stopped after {iteration} iterations")
            loss = loss_fn(images, iteration, drawn)
            optimiser.zero_grad(set_to_none=True)
            loss.backward(inputs=[images])  # not into the parameters of a network it went through
            all_reduce_(images.grad).mul_(scale)
            optimiser.step()
            with torch.no_grad():
                images.clamp_(0, 1)
            pending.append(all_reduce_(loss.detach()))
            done = iteration + 1
            if done % settings.checkpoint_every == 0 or done == settings.iterations:
                history += torch.stack(pending).tolist()  # one wait for the device a checkpoint
                pending.clear()
                bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
                save(done, seconds_before + time.perf_counter() - clock)
    synthetic.images = images.detach().cpu()
    return history, snapshots


def timed(run: Callable[[], CondenseResult]) -> CondenseResult:
    """Run a method and record its wall-clock seconds (with those spent before a resume)."""
    start = time.perf_counter()
    result = run()
    result.seconds = time.perf_counter() - start + result.info.get("seconds_before_resume", 0.0)
    return result
