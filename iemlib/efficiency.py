"""Condensation cost: how long a condensed set took, how busy the machine was, and convergence.

The paper's Figure 3 sets mAP against condensation time. A time means little when the machine
was shared, so each condensed set's ``.meta.json`` (seconds, environment with load averages) is
read back with a flag for a loaded machine, and ``retime`` makes a stored set again on a quiet
one: every run is seeded, so the set comes out the same and only its time is new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from .condense import condense
from .experiment import (Config, condense_task, resolve_device, set_meta, synthetic_path,
                         write_json)
from .report import results_path
from .synthetic import SyntheticSet

# A machine counts as loaded when a load average exceeded this many runnable threads a core
# (one run on all cores keeps it near 1).
LOAD_LIMIT = 1.25

Point = tuple[float, float]  # (condensation seconds, score)


def condense_cost(config: Config, results_dir: str | os.PathLike = "results") -> dict:
    """Seconds, environment and creation time of the condensed set of ``config`` (its meta)."""
    path = synthetic_path(config.resolved(), results_path(results_dir)).with_suffix(".meta.json")
    meta = json.loads(path.read_text())
    return {"seconds": meta["seconds"], "env": meta.get("env") or {}, "created": meta["created"]}


def retime(config: Config, results_dir: str | os.PathLike = "results", *, device: str = "auto",
           progress: bool = True) -> dict:
    """Condense the stored set of ``config`` again and, where the run makes the same set (every
    stored pixel and label), make its time the set's: the meta's seconds, environment (load
    averages included), loss history and date are the new run's, and the ones they replace
    are kept under ``earlier``. A run that makes another set (the library changed since, or a
    GPU did not repeat its arithmetic bit for bit) raises ValueError and leaves the meta alone.
    Resumable: a killed run continues from a checkpoint beside the set. Returns the seconds and
    environments before and after."""
    config = config.resolved()
    path = synthetic_path(config, Path(results_dir))
    meta_path = path.with_suffix(".meta.json")
    if not (path.exists() and meta_path.exists()):
        raise FileNotFoundError(f"no stored set to re-time at {path}: make it first "
                                "(python -m iemlib run or sweep)")
    target = resolve_device(device)
    checkpoint = path.with_suffix(".retime.ckpt.pt")
    task = condense_task(config, config.protocol(), target, progress=progress,
                         checkpoint=checkpoint, resume=True)
    result = condense(config.method, task, config.condense_settings())
    stored, made = SyntheticSet.load(path).state(torch.uint8), result.synthetic.state(torch.uint8)
    checkpoint.unlink(missing_ok=True)
    if not (torch.equal(made["images"], stored["images"])
            and torch.equal(made["labels"], stored["labels"])):
        raise ValueError(f"the run made another set than the one stored at {path.name} (the "
                         "library, or a GPU's arithmetic, differs from when it was made): its "
                         "time is not that set's; make the set afresh instead")
    meta, made_now = json.loads(meta_path.read_text()), set_meta(config, result, target)
    earlier = {key: meta.get(key) for key in ("seconds", "env", "created")}
    write_json({**meta, **made_now, "earlier": [*meta.get("earlier", []), earlier]}, meta_path)
    return {"set": path.name, "before": earlier["seconds"], "after": result.seconds,
            "env_before": earlier["env"] or {}, "env_after": made_now["env"]}


def retimed(config: Config, outcome: dict) -> str:
    """One line of what ``retime`` did: the set, its seconds and load before and after."""
    def at(seconds: float, env: dict) -> str:
        load = load_per_core(env)
        return f"{seconds:.1f} s (" + ("load not recorded" if load is None
                                       else f"load {load:.2f} a core") + ")"

    config = config.resolved()
    what = f"{config.method} ipc={config.ipc}" + (f", {config.iterations} iterations"
                                                  if config.iterations else "")
    return (f"{what}: {at(outcome['before'], outcome['env_before'])} -> "
            f"{at(outcome['after'], outcome['env_after'])}, the same set ({outcome['set']})")


def load_per_core(env: dict) -> float | None:
    """The highest of the 1/5/15-minute load averages a run recorded, per core (None: unknown)."""
    if not env.get("loadavg") or not env.get("cpu_count"):
        return None
    return max(env["loadavg"]) / env["cpu_count"]


def loaded(env: dict, limit: float = LOAD_LIMIT) -> bool | None:
    """Whether the machine was busy with other work when the run ended (None: not recorded)."""
    load = load_per_core(env)
    return None if load is None else load > limit


def time_to_convergence(points: Sequence[Point], tolerance: float) -> Point:
    """The fastest (seconds, score) point whose score is within ``tolerance`` of the best."""
    if not points:
        raise ValueError("time_to_convergence needs at least one point")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    best = max(score for _, score in points)
    return min((p for p in points if p[1] >= best - tolerance), key=lambda p: p[0])


def best_within(points: Sequence[Point], budget: float) -> float | None:
    """The best score among points that took at most ``budget`` seconds (None: none did)."""
    scores = [score for seconds, score in points if seconds <= budget]
    return max(scores) if scores else None


def compare_at_budgets(ours: Sequence[Point], theirs: Sequence[Point]) -> list[dict]:
    """At each of ``theirs``' times: their score and the best of ``ours`` in no more time.

    ``ours`` is None where none of our points was that fast; ``wins`` is then False.
    """
    rows = []
    for seconds, score in sorted(theirs):
        best = best_within(ours, seconds)
        rows.append({"seconds": seconds, "theirs": score, "ours": best,
                     "wins": best is not None and best > score})
    return rows
