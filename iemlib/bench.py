"""Speed benchmarks: the library against reference-style baselines, in one run on one machine.

Each benchmark times a baseline written the way the public reference code does it and the
library's own code at run time, on the same device in the same process (warm-up, then
interleaved repeats; medians), checks that both compute the same thing, and reports
baseline / ours:

``condense``  one DM/IEM iteration (matching loss + backward): VICO-UoE/DatasetCondensation's
              main_DM.py loop (class by class, fp32, the real branch forwarded with autograd on
              and ``.detach()``-ed, one backward of the summed loss) against
              ``condense.dm.matching_loss``; both consume the same generator draws, so their
              losses must agree. Also FLOPs, achieved GFLOP/s and a measured matmul peak.
              Each timed iteration waits for the device; on a GPU both are also timed
              ``BACK_TO_BACK`` iterations at a time, with no wait between them, as a loop runs.
``loop``      a whole DM run (``loop_iterations`` iterations: a fresh network, the loss, the image
              step): main_DM.py's loop against ``condense("dm")`` in each variant, setup
              included, a second an iteration; both reach the same images. On a GPU each
              variant runs with its host draws made ahead on worker threads (the default) and
              in turn (``CondenseTask.draw_ahead`` 0).
``map``       mAP@all: DeepHash-pytorch's ``CalcTopMap`` in numpy (a loop over queries, stable
              argsort) against ``retrieval.mean_average_precision``; the values must agree.
``encode``    hash codes (images a second): DeepHash-pytorch's ``compute_result`` (batches of
              64, autograd on) against the library's ``hashing.encode``.
``memory``    peak memory of a short DM run (a fresh process each: RSS high-water mark on the
              CPU, ``torch.cuda.max_memory_allocated`` on a GPU): main_DM.py's loop against
              ``condense("dm")``.

On the CPU glibc's allocator costs 2.4x unless big buffers stay on the heap; ``tune_allocator``
sets that up (from MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, else with ``mallopt``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .augment import DSA
from .condense import CondenseSettings, CondenseTask, condense
from .condense.dm import matching_loss
from .condense.engine import Embedder
from .condense.networks import random_network
from .data import CIFAR10_MEAN, CIFAR10_STD, DatasetError, Split, load_cifar10
from .devices import asynchronous
from .efficiency import LOAD_LIMIT, load_per_core
from .experiment import environment, resolve_device, write_json
from .hashing import encode
from .models import HashNet, build_backbone
from .retrieval import mean_average_precision
from .seeding import generator, seeded
from .training import as_float

BENCHMARKS = ("condense", "loop", "map", "encode", "memory")
DATA_SOURCES = ("auto", "cifar10", "random")
# (loss, gradient) tolerances against the fp32 baseline, by (precision, device type): the loss
# relative, the image gradient normwise. fp32 on the CPU computes the same thing in another
# order; on CUDA cuDNN runs convolutions in TF32 (a 10-bit mantissa), and the gradient, a
# difference of class means, shows it more (2.1e-2 measured on an H200); a bf16 real branch
# holds the loss within 1 % and the gradient within 5 %.
TOLERANCES = {("fp32", "cpu"): (1e-4, 1e-4), ("fp32", "cuda"): (1e-2, 5e-2),
              ("bf16", "cpu"): (1e-2, 5e-2), ("bf16", "cuda"): (1e-2, 5e-2)}
# the library's settings the condensation benchmark times: (precision, compile mode)
VARIANTS = {"fp32": ("fp32", "off"), "bf16": ("bf16", "off"),
            "bf16+compile": ("bf16", "default")}
CUDA_VARIANTS = {"bf16+cudagraphs": ("bf16", "reduce-overhead")}
PROFILE_TOP = 8                            # operators a profiled step lists
BACK_TO_BACK = 5                           # condense on a GPU: iterations a back-to-back timing
MAP_ATOL = 1e-12                           # float64 sums in another order
CODE_MISMATCH = 1e-3                       # signs of outputs within rounding of 0 may flip
REFERENCE_ENCODE_BATCH = 64
ENCODE_BITS = 32
CODE_FLIP = 0.25                           # synthetic codes: chance that a bit leaves its centre
# glibc's mallopt parameters M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_MMAP_MAX; mallopt takes an int
MMAP_THRESHOLD, TRIM_THRESHOLD, MMAP_MAX = -3, -1, -4
INT_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class Sizes:
    """What the benchmarks run: the defaults are CIFAR-10 condensation and retrieval shapes."""

    classes: int = 10
    real_per_class: int = 256
    ipc: int = 10
    queries: int = 1000
    database: int = 59000
    bits: tuple[int, ...] = (32, 64)
    repeats: int = 5
    encode_images: int = 500
    resnet_size: int = 64
    memory_iterations: int = 3
    loop_iterations: int = 10
    peak_size: int = 4096
    data: str = "auto"
    variants: tuple[str, ...] | None = None   # condensation variants (None: all, see VARIANTS)
    profile: int | None = None   # condensation: iterations to profile each step over (None: none)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            for number in value if isinstance(value, tuple) else [value]:
                if isinstance(number, int) and number < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {number}")
        if not self.bits:
            raise ValueError("--bits needs at least one code length")
        if self.ipc > self.real_per_class:
            raise ValueError(f"--ipc {self.ipc} is larger than --real-per-class "
                             f"{self.real_per_class}: the synthetic set starts from real images")
        if self.data not in DATA_SOURCES:
            raise ValueError(f"--data must be one of {DATA_SOURCES}, got {self.data!r}")
        if self.resnet_size % 8:
            raise ValueError(f"--resnet-size must be a multiple of 8, got {self.resnet_size}")


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------
def tune_allocator() -> str:
    """Keep big buffers on glibc's heap (env vars if set, else mallopt); says what holds."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") and os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return "glibc, thresholds from the environment"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        warnings.warn("mallopt unavailable: CPU timings may be up to 2.4x slower than with "
                      "MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736")
        return "default (mallopt unavailable)"
    mallopt(TRIM_THRESHOLD, INT_MAX)
    if mallopt(MMAP_THRESHOLD, INT_MAX) or mallopt(MMAP_MAX, 0):
        return "glibc, thresholds set with mallopt"
    warnings.warn("mallopt refused the mmap threshold: CPU timings may be up to 2.4x slower")
    return "default (mallopt refused)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                back_to_back: int = 1, warm_up: bool = True) -> dict[str, list[float]]:
    """Seconds of each run: one untimed warm-up each (``warm_up``; off where the caller has run
    them), then ``repeats`` rounds taking turns. A round times ``back_to_back`` calls of a run
    with no wait for the device between them (as a loop makes them: the host queues the next
    while the device works) and divides by their number; with 1, each call waits for the
    device, so its time also counts the device's tail."""
    for run in runs.values() if warm_up else ():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(back_to_back):
                run()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / back_to_back)
    return seconds


def matmul_peak(device: torch.device, size: int, repeats: int) -> tuple[float, list[float]]:
    """A practical fp32 peak: GFLOP/s of a size×size matmul (median), and its timings."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device) for _ in range(2))
    seconds = interleaved({"matmul": lambda: a @ b}, repeats, device)["matmul"]
    return 2 * size ** 3 / statistics.median(seconds) / 1e9, seconds


def ratio(baseline: list[float], ours: list[float]) -> float:
    """Median baseline / median ours."""
    return statistics.median(baseline) / statistics.median(ours)


# --------------------------------------------------------------------------------------------
# condensation
# --------------------------------------------------------------------------------------------
def bench_split(sizes: Sizes) -> tuple[Split, str]:
    """``real_per_class`` CIFAR-10 training images of each class, or random ones; and which."""
    if sizes.data != "random":
        try:
            return cifar_split(sizes), "CIFAR-10 training images"
        except DatasetError:
            if sizes.data == "cifar10":
                raise
    g = torch.Generator().manual_seed(0)
    n = sizes.classes * sizes.real_per_class
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(sizes.classes).repeat_interleave(sizes.real_per_class)
    return Split(images, labels, torch.arange(n)), "random images (no CIFAR-10 in $IEMLIB_DATA)"


def cifar_split(sizes: Sizes) -> Split:
    images, labels = load_cifar10()
    labels = labels[:50000]  # the training batches
    if sizes.classes > 10 or sizes.real_per_class > 5000:
        raise ValueError("CIFAR-10 has 10 classes of 5,000 training images; use --data random")
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[:sizes.real_per_class]
                        for c in range(sizes.classes)])
    return Split(images[chosen], labels[chosen], chosen)


def bench_task(split: Split, sizes: Sizes, device: torch.device) -> CondenseTask:
    return CondenseTask(split, sizes.classes, CIFAR10_MEAN, CIFAR10_STD, seed=0, device=device,
                        progress=False)


def bench_settings(sizes: Sizes, iterations: int = 1) -> CondenseSettings:
    """DM with the whole real set of a class as its real batch (no multi-formation)."""
    return CondenseSettings(ipc=sizes.ipc, iterations=iterations, real_batch=sizes.real_per_class,
                            checkpoint_every=iterations)


def reference_loss(real: torch.Tensor, members: list[torch.Tensor], images: torch.Tensor,
                   ipc: int, real_batch: int, dsa: DSA, net: nn.Module,
                   generator: torch.Generator) -> torch.Tensor:
    """main_DM.py's loss: class by class, real embeddings detached, one summed loss.

    ``real`` holds every real image as float on the device (the reference's ``images_all``);
    the draws (real batch, then one siamese DSA transform, per class) follow ``matching_loss``.
    """
    loss = torch.tensor(0.0, device=images.device)
    for c, indices in enumerate(members):
        chosen = indices[torch.randperm(len(indices), generator=generator)[:real_batch]]
        img_real, img_syn = real[chosen], images[c * ipc:(c + 1) * ipc]
        params = dsa.sample(1, generator, siamese=True)
        output_real = net(dsa(img_real, params.expand(len(img_real)))).detach()
        output_syn = net(dsa(img_syn, params.expand(len(img_syn))))
        loss = loss + torch.sum((output_real.mean(dim=0) - output_syn.mean(dim=0)) ** 2)
    return loss


Step = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def iteration_steps(task: CondenseTask, sizes: Sizes, net: nn.Module,
                    variants: dict[str, tuple[str, str]] | None = None) -> dict[str, Step]:
    """The baseline's iteration and the library's, one a variant (name -> (precision, compile
    mode), default fp32 eager): generator -> (loss, image gradient)."""
    settings = bench_settings(sizes)
    synthetic = task.initial_set(settings.ipc)
    members, dsa = task.class_indices(), DSA(mean=task.mean, std=task.std)
    real = as_float(task.train.images).to(task.device)
    images = synthetic.images.clone().to(task.device).requires_grad_(True)

    def baseline(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images.grad = None
        loss = reference_loss(real, members, images, settings.ipc, settings.real_batch, dsa, net, g)
        loss.backward()
        return loss.detach(), images.grad

    def ours(embedder: Embedder) -> Step:
        def step(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            images.grad = None
            loss = matching_loss(task, settings, synthetic, members, dsa, net, images, g,
                                 embedder=embedder)
            loss.backward(inputs=[images])
            return loss.detach(), images.grad
        return step

    variants = variants or {"fp32": ("fp32", "off")}
    return {"baseline": baseline, **{name: ours(Embedder(task.device, *v))
                                     for name, v in variants.items()}}


def variants_for(device: torch.device, names: tuple[str, ...] | None = None) -> dict:
    """The library's variants to time on ``device`` (all by default)."""
    known = {**VARIANTS, **(CUDA_VARIANTS if device.type == "cuda" else {})}
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise ValueError(f"unknown variants {unknown} on {device.type}: choose from {list(known)}")
    return {n: known[n] for n in names} if names else known


def draws() -> torch.Generator:
    """The generator of every benchmarked iteration (the same draws each time)."""
    return generator(0, "bench", "condense")


def agreement(baseline: Step, ours: Step, rtol: float, grad_rtol: float | None = None) -> dict:
    """Run both steps on the same draws: the losses (relative difference), the image gradients
    (normwise relative difference) and the number of draws each made must agree."""
    generators = {"baseline": draws(), "ours": draws()}
    (loss_b, grad_b), (loss_o, grad_o) = baseline(generators["baseline"]), ours(generators["ours"])
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    loss_diff = float((loss_b - loss_o).abs() / loss_o.abs().clamp(min=1e-12))
    grad_diff = float((grad_b - grad_o).norm() / grad_b.norm().clamp(min=1e-12))
    same_draws = torch.equal(generators["baseline"].get_state(), generators["ours"].get_state())
    return {"loss_baseline": float(loss_b), "loss_ours": float(loss_o), "loss_rel_diff": loss_diff,
            "grad_rel_diff": grad_diff, "draws_match": same_draws, "rtol": rtol,
            "grad_rtol": grad_rtol,
            "ok": same_draws and loss_diff <= rtol and grad_diff <= grad_rtol}


def tolerance(precision: str, device: torch.device) -> tuple[float, float]:
    """(loss, gradient) tolerances of a variant (a GPU other than CUDA's counts as CUDA)."""
    return TOLERANCES[precision, "cpu" if device.type == "cpu" else "cuda"]


def headline(report: dict[str, dict], precisions: dict[str, str]) -> tuple[str, bool]:
    """The fastest timed variant of ``report`` whose check holds (the fastest timed one where
    none holds), and whether the benchmark holds: some variant's check, and every fp32
    variant's (the library's default), by the variants' ``precisions``."""
    timed = [n for n, r in report.items() if "seconds" in r]
    holding = [n for n in timed if report[n]["check"]["ok"]]
    chosen = min(holding or timed, key=lambda n: report[n]["seconds"])
    defaults = all(r["check"]["ok"] for n, r in report.items()
                   if precisions[n] == "fp32" and "check" in r)
    return chosen, bool(holding) and defaults


def iteration_flops(step: Step) -> int:
    """FLOPs of one iteration, forward and backward."""
    with FlopCounterMode(display=False) as counter:
        step(draws())
    return counter.get_total_flops()


def profile_steps(steps: dict[str, Step], iterations: int, device: torch.device) -> dict:
    """Where each step's time goes (``torch.profiler`` over ``iterations`` iterations), an
    iteration: the busiest entries by self time on the device (its kernels, on a GPU) or the
    CPU, and on a GPU also the host's busiest operators (``host``), which show a step that
    leaves the GPU waiting for its launches."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    activities += [torch.profiler.ProfilerActivity.CUDA] if cuda else []
    report = {}
    for name, step in steps.items():
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(iterations):
                step(draws())
            synchronize(device)
        events = profiler.key_averages()
        if not cuda:
            report[name] = {"clock": "cpu", **busiest(events, "self_cpu_time_total", iterations)}
            continue
        # an operator's self device time repeats its kernels' own: count the kernels alone
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        report[name] = {"clock": "device",
                        **busiest(kernels or events, "self_device_time_total", iterations),
                        "host": busiest(events, "self_cpu_time_total", iterations)}
    return report


def busiest(events: list, clock: str, iterations: int) -> dict:
    """The total of ``clock`` (a profiler event's attribute, µs) an iteration, in ms, and the
    ``PROFILE_TOP`` events with most of it."""
    events = sorted(events, key=lambda e: getattr(e, clock), reverse=True)
    return {"ms": sum(getattr(e, clock) for e in events) / 1e3 / iterations,
            "top": [{"op": e.key, "calls": e.count / iterations,
                     "ms": getattr(e, clock) / 1e3 / iterations} for e in events[:PROFILE_TOP]]}


def condense_benchmark(sizes: Sizes, device: torch.device) -> dict:
    """Every variant against the baseline; the headline is the fastest variant whose loss and
    gradient hold (fp32 must hold: it is the library's default)."""
    split, source = bench_split(sizes)
    task = bench_task(split, sizes, device)
    net = random_network(task, bench_settings(sizes), "bench-network")
    variants = variants_for(device, sizes.variants)
    steps = iteration_steps(task, sizes, net, variants)
    report: dict[str, dict] = {}
    for name, (precision, _) in variants.items():
        try:
            report[name] = {"check": agreement(steps["baseline"], steps[name],
                                               *tolerance(precision, device))}
        except Exception as error:  # a compiler missing on this machine, say: say so, go on
            report[name] = {"error": f"{type(error).__name__}: {error}"}
            del steps[name]
    flops = iteration_flops(steps["baseline"])
    seconds = interleaved({k: (lambda s=s: s(draws())) for k, s in steps.items()},
                          sizes.repeats, device)
    base_s = statistics.median(seconds["baseline"])
    for name in steps.keys() - {"baseline"}:
        ours_s = statistics.median(seconds[name])
        report[name].update(seconds=ours_s, speedup=base_s / ours_s, gflops=flops / ours_s / 1e9)
    if asynchronous(device):
        pipelined = interleaved({k: (lambda s=s: s(draws())) for k, s in steps.items()},
                                sizes.repeats, device, back_to_back=BACK_TO_BACK)
        for name in steps.keys() - {"baseline"}:
            report[name]["speedup_back_to_back"] = ratio(pipelined["baseline"], pipelined[name])
        seconds.update({f"{k} back to back": v for k, v in pipelined.items()})
    chosen, holds = headline(report, {name: v[0] for name, v in variants.items()})
    peak, peak_seconds = matmul_peak(device, sizes.peak_size, sizes.repeats)
    profiled = {"profile": profile_steps(steps, sizes.profile, device)} if sizes.profile else {}
    return {"data": source, "flops": flops, "seconds_baseline": base_s,
            "seconds_ours": report[chosen]["seconds"], "variant": chosen,
            "speedup": report[chosen]["speedup"], "gflops": report[chosen]["gflops"],
            "speedup_back_to_back": report[chosen].get("speedup_back_to_back"),
            "gflops_baseline": flops / base_s / 1e9, "peak_gflops": peak,
            "peak_matmul_size": sizes.peak_size, "variants": report,
            "check": {**report[chosen]["check"], "ok": holds}, **profiled,
            "timings": {**seconds, "peak_matmul": peak_seconds}}


# --------------------------------------------------------------------------------------------
# the condensation loop
# --------------------------------------------------------------------------------------------
# a run's outcome: its final images (on the CPU) and each iteration's loss
RunOutcome = tuple[torch.Tensor, list[float]]


def reference_run(task: CondenseTask, sizes: Sizes, iterations: int) -> RunOutcome:
    """main_DM.py's loop: a fresh network, the reference loss, SGD on the images and the loss
    read back (``loss.item()``), each iteration. Its images are pixels in [0, 1] stepped as
    ``optimise_images`` steps them (the gradient scaled by std², main_DM.py's step on normalised
    images, then a clamp), so that both loops reach the same images."""
    settings = bench_settings(sizes, iterations)
    images = task.initial_set(settings.ipc).images.to(task.device).requires_grad_(True)
    optimiser = torch.optim.SGD([images], lr=settings.lr, momentum=settings.momentum)
    scale = torch.tensor(task.std, device=task.device).view(1, -1, 1, 1) ** 2
    real = as_float(task.train.images).to(task.device)
    members, dsa = task.class_indices(), DSA(mean=task.mean, std=task.std)
    losses = []
    for iteration in range(settings.iterations):
        net = random_network(task, settings, "dm-network", iteration)
        loss = reference_loss(real, members, images, settings.ipc, settings.real_batch, dsa, net,
                              generator(task.seed, "dm", "iteration", iteration))
        optimiser.zero_grad()
        loss.backward()
        images.grad.mul_(scale)
        optimiser.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        losses.append(loss.item())
    return images.detach().cpu(), losses


def library_run(task: CondenseTask, settings: CondenseSettings) -> RunOutcome:
    result = condense("dm", task, settings)
    return result.synthetic.images, result.history


def run_agreement(baseline: RunOutcome, ours: RunOutcome, initial: torch.Tensor, rtol: float,
                  image_rtol: float) -> dict:
    """Two runs from the same ``initial`` images agree when every iteration's loss is within
    ``rtol`` (relative) and the change of the images within ``image_rtol`` (normwise)."""
    (images_b, losses_b), (images_o, losses_o) = baseline, ours
    loss_diff = max((abs(b - o) / max(abs(b), 1e-12) for b, o in zip(losses_b, losses_o)),
                    default=0.0)
    image_diff = float((images_o - images_b).norm() / (images_b - initial).norm().clamp(min=1e-12))
    same_length = len(losses_b) == len(losses_o)
    return {"loss_rel_diff": loss_diff, "image_rel_diff": image_diff, "rtol": rtol,
            "image_rtol": image_rtol, "iterations_match": same_length,
            "ok": same_length and loss_diff <= rtol and image_diff <= image_rtol}


def loop_runs(task: CondenseTask, sizes: Sizes, device: torch.device
              ) -> dict[str, tuple[str, Callable[[], RunOutcome]]]:
    """The library's runs, name -> (precision, run): each variant with its draws made as the
    device's default, and on a GPU also in turn (``draw_ahead`` 0)."""
    runs = {}
    for name, (precision, mode) in variants_for(device, sizes.variants).items():
        settings = replace(bench_settings(sizes, sizes.loop_iterations), precision=precision,
                           compile_mode=mode)
        for label, ahead in [(name, None)] + ([(f"{name}, drawn in turn", 0)]
                                              if asynchronous(device) else []):
            variant_task = replace(task, draw_ahead=ahead)
            runs[label] = precision, lambda t=variant_task, s=settings: library_run(t, s)
    return runs


def loop_benchmark(sizes: Sizes, device: torch.device) -> dict:
    """Whole DM runs, a second an iteration: the reference loop against each of the library's
    runs (``loop_runs``), checked to reach the same images (the gradient's tolerance) with the
    same losses. The first run of each checks it and warms it up (compiles, records graphs)."""
    split, source = bench_split(sizes)
    task = bench_task(split, sizes, device)
    initial = task.initial_set(sizes.ipc).images
    baseline = functools.partial(reference_run, task, sizes, sizes.loop_iterations)
    reference = baseline()
    runs: dict[str, Callable[[], object]] = {"baseline": baseline}
    report: dict[str, dict] = {}
    for name, (precision, run) in loop_runs(task, sizes, device).items():
        report[name] = {"precision": precision}
        try:
            report[name]["check"] = run_agreement(reference, run(), initial,
                                                  *tolerance(precision, device))
            runs[name] = run
        except Exception as error:  # a compiler missing on this machine, say: say so, go on
            report[name]["error"] = f"{type(error).__name__}: {error}"
    seconds = interleaved(runs, sizes.repeats, device, warm_up=False)
    seconds = {name: [t / sizes.loop_iterations for t in ts] for name, ts in seconds.items()}
    for name in runs.keys() - {"baseline"}:
        report[name].update(seconds=statistics.median(seconds[name]),
                            speedup=ratio(seconds["baseline"], seconds[name]))
    chosen, holds = headline(report, {name: r["precision"] for name, r in report.items()})
    return {"data": source, "iterations": sizes.loop_iterations,
            "seconds_baseline": statistics.median(seconds["baseline"]),
            "seconds_ours": report[chosen]["seconds"], "variant": chosen,
            "speedup": report[chosen]["speedup"], "variants": report,
            "check": {**report[chosen]["check"], "ok": holds}, "timings": seconds}


# --------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------
def structured_codes(n: int, bits: int, classes: int,
                     g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """±1 codes (float32) near one random centre a class, and their class labels."""
    centres = torch.randint(0, 2, (classes, bits), generator=g).float() * 2 - 1
    labels = torch.randint(classes, (n,), generator=g)
    flips = torch.rand(n, bits, generator=g) < CODE_FLIP
    return torch.where(flips, -centres[labels], centres[labels]), labels


def reference_map(qB: np.ndarray, rB: np.ndarray, queryL: np.ndarray,
                  retrievalL: np.ndarray) -> float:
    """DeepHash-pytorch's CalcTopMap at topk = N: one-hot labels, a loop over queries, Hamming
    by numpy dot, a stable argsort (ties by database index), AP from the cumulative hits."""
    num_query, num_db = queryL.shape[0], retrievalL.shape[0]
    ranks = np.arange(1, num_db + 1, dtype=np.float64)
    topkmap = 0.0
    for i in range(num_query):
        gnd = (np.dot(queryL[i, :], retrievalL.transpose()) > 0).astype(np.float64)
        hamm = 0.5 * (rB.shape[1] - np.dot(qB[i, :], rB.transpose()))
        gnd = gnd[np.argsort(hamm, kind="stable")]
        hits = np.cumsum(gnd)
        if hits[-1] == 0:
            continue
        topkmap += float(np.sum(hits / ranks * gnd) / hits[-1])
    return topkmap / num_query


def one_hot(labels: torch.Tensor, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels.numpy()]


def map_pair(queries: int, database: int, bits: int, classes: int,
             device: torch.device) -> dict[str, Callable[[], float]]:
    """The baseline and the library's mAP@all on one set of structured codes."""
    codes, labels = structured_codes(queries + database, bits, classes, generator(0, "bench", bits))
    q, db, ql, dl = codes[:queries], codes[queries:], labels[:queries], labels[queries:]
    arrays = (q.numpy(), db.numpy(), one_hot(ql, classes), one_hot(dl, classes))
    on_device = [t.to(device) for t in (q, db, ql, dl)]
    return {"baseline": lambda: reference_map(*arrays),
            "ours": lambda: mean_average_precision(*on_device, topk=None)}


def map_benchmark(sizes: Sizes, device: torch.device) -> dict:
    result: dict = {"queries": sizes.queries, "database": sizes.database, "by_bits": {}}
    for bits in sizes.bits:
        runs = map_pair(sizes.queries, sizes.database, bits, 10, device)
        values = {name: run() for name, run in runs.items()}
        seconds = interleaved(runs, sizes.repeats, device)
        result["by_bits"][str(bits)] = {
            "map_baseline": values["baseline"], "map_ours": values["ours"],
            "abs_diff": abs(values["baseline"] - values["ours"]),
            "seconds_baseline": statistics.median(seconds["baseline"]),
            "seconds_ours": statistics.median(seconds["ours"]),
            "speedup": ratio(seconds["baseline"], seconds["ours"]), "timings": seconds}
    by_bits = result["by_bits"].values()
    result["max_abs_diff"] = max(r["abs_diff"] for r in by_bits)
    result["speedup"] = min(r["speedup"] for r in by_bits)
    result["check"] = {"max_abs_diff": result["max_abs_diff"], "atol": MAP_ATOL,
                       "ok": result["max_abs_diff"] <= MAP_ATOL}
    return result


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------
def reference_encode(net: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """DeepHash-pytorch's compute_result: batches of 64, autograd on, ``.data.cpu()``, sign."""
    net.eval()
    outputs = [net(as_float(images[i:i + REFERENCE_ENCODE_BATCH]).to(device)).data.cpu()
               for i in range(0, len(images), REFERENCE_ENCODE_BATCH)]
    return torch.cat(outputs).sign()


def encode_benchmark(sizes: Sizes, device: torch.device) -> dict:
    result = {}
    for backbone, size in (("convnet", 32), ("resnetap", sizes.resnet_size)):
        with seeded(0, "bench", backbone):
            net = HashNet(build_backbone(backbone, channels=3, image_size=size, mean=CIFAR10_MEAN,
                                         std=CIFAR10_STD), ENCODE_BITS).to(device)
        g = generator(0, "bench", "encode", size)
        images = torch.randint(0, 256, (sizes.encode_images, 3, size, size), generator=g,
                               dtype=torch.uint8)
        runs = {"baseline": lambda: reference_encode(net, images, device),
                "ours": lambda: encode(net, images, device=device)}
        mismatch = float((runs["baseline"]() != runs["ours"]()).float().mean())
        seconds = interleaved(runs, sizes.repeats, device)
        result[f"{backbone}-{size}"] = {
            "images": sizes.encode_images,
            "images_per_s_baseline": sizes.encode_images / statistics.median(seconds["baseline"]),
            "images_per_s_ours": sizes.encode_images / statistics.median(seconds["ours"]),
            "speedup": ratio(seconds["baseline"], seconds["ours"]), "timings": seconds,
            "check": {"code_mismatch": mismatch, "limit": CODE_MISMATCH,
                      "ok": mismatch <= CODE_MISMATCH}}
    return result


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------
def peak_memory(kind: str, split: Split, sizes: Sizes, device: str, threads: int) -> dict:
    """In a fresh process: memory in use before a short run, and its high-water mark (MB)."""
    tune_allocator()
    torch.set_num_threads(threads)
    task = bench_task(split, sizes, torch.device(device))
    cuda = task.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(task.device)
    before = torch.cuda.memory_allocated(task.device) if cuda else rss_high_water(reset=True)
    if kind == "baseline":
        reference_run(task, sizes, sizes.memory_iterations)
    else:
        condense("dm", task, bench_settings(sizes, sizes.memory_iterations))
    peak = torch.cuda.max_memory_allocated(task.device) if cuda else rss_high_water()
    return {"before_mb": before / 2 ** 20, "peak_mb": peak / 2 ** 20}


def rss_high_water(reset: bool = False) -> int:
    """This process's resident-set high-water mark (VmHWM, bytes); ``reset`` lowers it to the
    current RSS first. Not ru_maxrss: a spawned child's starts at its parent's."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def in_fresh_process(function: Callable[..., dict], *args: object) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def memory_benchmark(sizes: Sizes, device: torch.device) -> dict:
    split, source = bench_split(sizes)
    runs = {kind: in_fresh_process(peak_memory, kind, split, sizes, str(device),
                                   torch.get_num_threads())
            for kind in ("baseline", "ours")}
    measure = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS"
    return {"data": source, "iterations": sizes.memory_iterations, "measure": measure, **runs,
            "ratio": runs["baseline"]["peak_mb"] / runs["ours"]["peak_mb"]}


# --------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------
RUNNERS = {"condense": condense_benchmark, "loop": loop_benchmark, "map": map_benchmark,
           "encode": encode_benchmark, "memory": memory_benchmark}


def run_benchmarks(sizes: Sizes, only: tuple[str, ...] = BENCHMARKS, device: str = "auto",
                   allocator: str = "", report: Callable[[str], None] = print) -> dict:
    """Run the chosen benchmarks; the results (JSON-ready) with the summary keys on top."""
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}: choose from {list(BENCHMARKS)}")
    resolved = resolve_device(device)
    env = environment(resolved)
    results: dict = {"device": env["device_name"], "device_type": str(resolved),
                     "allocator": allocator, "sizes": asdict(sizes), "env": env}
    report(f"device: {env['device_name']} ({resolved}, {torch.get_num_threads()} threads); "
           f"allocator: {allocator or 'untouched'}")
    load = load_per_core(env)
    if load is not None and load > LOAD_LIMIT:
        report(f"warning: the machine is busy (load {load:.2f} a core): timings are unreliable")
    for name in BENCHMARKS:
        if name in only:
            report(f"{name}: running ...")
            results[name] = RUNNERS[name](sizes, resolved)
    return summarise(results)


def summarise(results: dict) -> dict:
    """The headline numbers first, then each benchmark, then every raw timing (seconds)."""
    def get(name: str, key: str) -> object:
        return results.get(name, {}).get(key)

    checked = [results.get("condense"), results.get("loop"), results.get("map"),
               *results.get("encode", {}).values()]
    timings = {name: pop_timings(results[name]) for name in BENCHMARKS if name in results}
    return {"condense_speedup": get("condense", "speedup"), "map_speedup": get("map", "speedup"),
            "loop_speedup": get("loop", "speedup"),
            "condense_gflops": get("condense", "gflops"),
            "peak_gflops": get("condense", "peak_gflops"), "memory_ratio": get("memory", "ratio"),
            "checks_ok": all(r["check"]["ok"] for r in checked if r), **results,
            "timings": {name: t for name, t in timings.items() if t}}


def pop_timings(result: dict) -> dict:
    """Take the raw timings out of a benchmark's (nested) results, keeping their nesting."""
    if "timings" in result:
        return result.pop("timings")
    nested = {key: pop_timings(value) for key, value in result.items() if isinstance(value, dict)}
    return {key: value for key, value in nested.items() if value}


HEADER = ("benchmark", "baseline", "ours", "ratio", "check")


def result_rows(results: dict) -> list[tuple[str, ...]]:
    """One row a measurement (columns as ``HEADER``), as the table prints them."""
    return (condense_rows(results) + loop_rows(results) + map_rows(results)
            + encode_rows(results) + memory_rows(results))


def table(results: dict) -> str:
    """The results as a fixed-width table: benchmark, baseline, ours, ratio, check."""
    rows = [HEADER, *result_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + footnotes(results))


def verdict(check: dict) -> str:
    return "ok" if check["ok"] else "FAILED"


def condense_rows(results: dict) -> list[tuple[str, ...]]:
    if "condense" not in results:
        return []
    s = results["sizes"]
    return variant_rows(
        results["condense"], f"DM iteration ({s['classes']}x{s['real_per_class']} real, ipc "
        f"{s['ipc']})", lambda c: f"loss {c['loss_ours']:.6g}, rel diff {c['loss_rel_diff']:.1e} "
        f"(grad {c['grad_rel_diff']:.1e}, tol {c['rtol']:g}/{c['grad_rtol']:g}, draws "
        f"{'match' if c['draws_match'] else 'DIFFER'})")


def loop_rows(results: dict) -> list[tuple[str, ...]]:
    if "loop" not in results:
        return []
    r = results["loop"]
    return variant_rows(
        r, f"DM run ({r['iterations']} iterations), an iteration",
        lambda c: f"losses rel diff {c['loss_rel_diff']:.1e}, images {c['image_rel_diff']:.1e} "
        f"(tol {c['rtol']:g}/{c['image_rtol']:g})")


def variant_rows(r: dict, title: str, describe: Callable[[dict], str]) -> list[tuple[str, ...]]:
    """A row a variant of a benchmark timed in several (``describe`` words its check); * marks
    the headline."""
    rows = []
    for name, v in r["variants"].items():
        label = f"{title}, ours {name}{' *' if name == r['variant'] else ''}"
        if "error" in v:
            rows.append((label, f"{r['seconds_baseline']:.4f} s", "-", "-",
                         f"not run: {v['error']}"))
            continue
        rows.append((label, f"{r['seconds_baseline']:.4f} s", f"{v['seconds']:.4f} s",
                     f"{v['speedup']:.2f}x", f"{verdict(v['check'])}: {describe(v['check'])}"))
    return rows


def map_rows(results: dict) -> list[tuple[str, ...]]:
    if "map" not in results:
        return []
    r = results["map"]
    return [(f"mAP@all {bits} bits ({r['queries']}x{r['database']})",
             f"{b['seconds_baseline']:.3f} s", f"{b['seconds_ours']:.3f} s", f"{b['speedup']:.2f}x",
             f"{'ok' if b['abs_diff'] <= MAP_ATOL else 'FAILED'}: mAP {b['map_ours']:.6f}, "
             f"diff {b['abs_diff']:.1e}") for bits, b in r["by_bits"].items()]


def encode_rows(results: dict) -> list[tuple[str, ...]]:
    return [(f"encode {name} ({r['images']} images)", f"{r['images_per_s_baseline']:.1f} img/s",
             f"{r['images_per_s_ours']:.1f} img/s", f"{r['speedup']:.2f}x",
             f"{verdict(r['check'])}: {r['check']['code_mismatch']:.1e} of bits differ")
            for name, r in results.get("encode", {}).items()]


def memory_rows(results: dict) -> list[tuple[str, ...]]:
    if "memory" not in results:
        return []
    r = results["memory"]
    return [(f"memory: {r['iterations']}-iteration DM run ({r['measure']})",
             f"{r['baseline']['peak_mb']:.0f} MB", f"{r['ours']['peak_mb']:.0f} MB",
             f"{r['ratio']:.2f}x", f"before the run: {r['baseline']['before_mb']:.0f} / "
             f"{r['ours']['before_mb']:.0f} MB")]


def footnotes(results: dict) -> list[str]:
    notes = [f"device: {results['device']} ({results['device_type']}); "
             f"allocator: {results['allocator'] or 'untouched'}; ratio: baseline / ours "
             "(throughput: ours / baseline), medians"]
    if "condense" in results:
        r = results["condense"]
        notes.append(f"condense: {r['data']}; * the headline variant (the fastest whose loss "
                     f"and gradient hold); {r['flops'] / 1e9:.2f} GFLOP an iteration: "
                     f"{r['gflops']:.1f} GFLOP/s ours, {r['gflops_baseline']:.1f} baseline, "
                     f"against a {r['peak_gflops']:.1f} GFLOP/s fp32 matmul peak "
                     f"({r['peak_matmul_size']}^2) = {r['gflops'] / r['peak_gflops']:.0%}"
                     + (" (the headline's real branch runs in bf16, which can pass the fp32 peak)"
                        if r["variant"].startswith("bf16") else ""))
        back_to_back = {n: v["speedup_back_to_back"] for n, v in r["variants"].items()
                        if "speedup_back_to_back" in v}
        if back_to_back:
            notes.append(f"condense, {BACK_TO_BACK} iterations back to back (no wait for the "
                         "device between them, as the loop runs them), baseline / ours: "
                         + ", ".join(f"{n} {x:.2f}x" for n, x in back_to_back.items()))
    if "loop" in results:
        notes.append(f"loop: {results['loop']['data']}; whole runs, setup included, over their "
                     "iterations; the baseline reads each iteration's loss back (loss.item()), "
                     "the library its losses once a checkpoint; on a GPU the library draws "
                     "each iteration's network and batches ahead on worker threads unless "
                     "'drawn in turn'; images: the final images' distance over how far the "
                     "baseline's moved")
    for name, p in results.get("condense", {}).get("profile", {}).items():
        for clock, q in [(p["clock"], p), *([("host", p["host"])] if "host" in p else [])]:
            notes.append(f"profile {name}: {q['ms']:.2f} ms of {clock} self time an iteration; "
                         + ", ".join(f"{o['op'][:60]} {o['ms']:.2f} ms ({o['calls']:g}x)"
                                     for o in q["top"]))
    if not results["checks_ok"]:
        notes.append("CHECK FAILED: the baseline and the library disagree (see above)")
    return notes


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def add_bench_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m iemlib bench``; their defaults are ``Sizes()``'s."""
    d = Sizes()
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="the benchmarks to run (default: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write the results here as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument("--data", choices=DATA_SOURCES, default=d.data,
                        help="condensation images: CIFAR-10 from $IEMLIB_DATA when there (auto)")
    for name, help_text in (("classes", "condensation: classes"),
                            ("real_per_class", "condensation: real images a class (the batch)"),
                            ("ipc", "condensation: synthetic images a class"),
                            ("queries", "mAP: queries"), ("database", "mAP: database codes"),
                            ("repeats", "timed repeats of each measurement (after a warm-up)"),
                            ("encode_images", "encode: images"),
                            ("resnet_size", "encode: ResNetAP-10 image size"),
                            ("memory_iterations", "memory: DM iterations"),
                            ("loop_iterations", "loop: DM iterations a timed run"),
                            ("peak_size", "the matmul that measures the fp32 peak")):
        default = getattr(d, name)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default,
                            help=f"{help_text} (default: {default})")
    parser.add_argument("--bits", type=int, nargs="+", default=list(d.bits),
                        help=f"mAP: code lengths (default: {' '.join(map(str, d.bits))})")
    parser.add_argument("--variants", nargs="+", default=None,
                        choices=[*VARIANTS, *CUDA_VARIANTS],
                        help="condensation: the library's variants to time "
                             "(default: all; bf16+cudagraphs on CUDA only)")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="condensation: also profile N iterations of the baseline and each "
                             "variant (torch.profiler) and list their busiest operators")


def sizes_from(args: argparse.Namespace) -> Sizes:
    values = {name: getattr(args, name) for name in asdict(Sizes())}
    variants = tuple(args.variants) if args.variants else None
    return Sizes(**{**values, "bits": tuple(args.bits), "variants": variants})


def bench_cli(args: argparse.Namespace) -> int:
    """``python -m iemlib bench``: run, print the table, write the JSON; 1 if a check failed."""
    sizes = sizes_from(args)
    allocator = tune_allocator()
    results = run_benchmarks(sizes, tuple(args.only), args.device, allocator,
                             report=lambda line: print(line, flush=True))
    print(table(results))
    if args.json:
        write_json(results, args.json)
        print(f"results: {args.json}")
    return 0 if results["checks_ok"] else 1
