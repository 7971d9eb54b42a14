"""Timing on one machine: the allocator, waits for the device, interleaved repeats, a matmul peak.

On the CPU glibc's allocator costs 2.4x unless big buffers stay on the heap; ``tune_allocator``
sets that up (from MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, else with ``mallopt``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import time
import warnings
from typing import Callable

import torch

# glibc's mallopt parameters M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_MMAP_MAX; mallopt takes an int
MMAP_THRESHOLD, TRIM_THRESHOLD, MMAP_MAX = -3, -1, -4
INT_MAX = 2 ** 31 - 1


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
