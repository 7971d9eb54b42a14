"""Condensation cost: how long a condensed set took, how busy the machine was, and convergence.

The paper's Figure 3 sets mAP against condensation time. A time means little when the machine
was shared, so each condensed set's ``.meta.json`` (seconds, environment with load averages) is
read back with a flag for a loaded machine.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from .experiment import Config, synthetic_path
from .report import results_path

# A machine counts as loaded when a load average exceeded this many runnable threads a core
# (one run on all cores keeps it near 1).
LOAD_LIMIT = 1.25

Point = tuple[float, float]  # (condensation seconds, score)


def condense_cost(config: Config, results_dir: str | os.PathLike = "results") -> dict:
    """Seconds, environment and creation time of the condensed set of ``config`` (its meta)."""
    path = synthetic_path(config.resolved(), results_path(results_dir)).with_suffix(".meta.json")
    meta = json.loads(path.read_text())
    return {"seconds": meta["seconds"], "env": meta.get("env") or {}, "created": meta["created"]}


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
