"""``condense``: one DM/IEM iteration (matching loss + backward), main_DM.py's class-by-class
fp32 loop against ``condense.dm.matching_loss`` in each of the library's variants, on the same
draws; also its FLOPs, GFLOP/s and, on request, a profile of each step."""

from __future__ import annotations

import statistics
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..augment import DSA
from ..condense import CondenseSettings, CondenseTask
from ..condense.dm import matching_loss
from ..condense.engine import Embedder
from ..condense.networks import random_network
from ..data import CIFAR10_MEAN, CIFAR10_STD, DatasetError, Split, load_cifar10
from ..devices import asynchronous
from ..seeding import generator
from ..training import as_float
from .sizes import Sizes
from .timing import interleaved, matmul_peak, ratio, synchronize

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
