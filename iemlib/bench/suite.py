"""The chosen benchmarks in one run on one device, and their results with the headline keys on top."""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import torch

from ..efficiency import LOAD_LIMIT, load_per_core
from ..experiment import environment, resolve_device
from .condense import condense_benchmark
from .encoding import encode_benchmark
from .loop import loop_benchmark
from .memory import memory_benchmark
from .retrieval import map_benchmark
from .sizes import BENCHMARKS, Sizes

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
