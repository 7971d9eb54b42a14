"""``memory``: the peak memory of a short DM run, main_DM.py's loop against ``condense("dm")``,
each in a fresh process."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import torch

from ..condense import condense
from ..data import Split
from .condense import bench_settings, bench_split, bench_task
from .loop import reference_run
from .sizes import Sizes
from .timing import tune_allocator

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
