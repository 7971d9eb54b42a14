"""``loop``: whole DM runs (a fresh network, the loss and the image step each iteration), main_DM.py's
loop against ``condense("dm")`` in each variant, checked to reach the same images."""

from __future__ import annotations

import functools
import statistics
from dataclasses import replace
from typing import Callable

import torch

from ..augment import DSA
from ..condense import CondenseSettings, CondenseTask, condense
from ..condense.networks import random_network
from ..devices import asynchronous
from ..seeding import generator
from ..training import as_float
from .condense import (bench_settings, bench_split, bench_task, headline, reference_loss, tolerance,
                       variants_for)
from .sizes import Sizes
from .timing import interleaved, ratio

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
