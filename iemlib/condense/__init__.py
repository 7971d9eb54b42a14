"""Condensation methods behind one registry.

Each method is ``condense(task, settings) -> CondenseResult``; ``PINNED`` lists the settings a
method fixes (DM has no network or data augmentation), so a record shows what really ran.
"""

from __future__ import annotations

from typing import Callable

from . import dm, iem, random
from .base import CondenseResult, CondenseSettings, CondenseTask, Interrupted

METHODS: dict[str, Callable[[CondenseTask, CondenseSettings], CondenseResult]] = {
    "random": random.condense,
    "dm": dm.condense,
    "iem": iem.condense,
}

_NO_AUGMENTATION = {"factor": 1, "network": "fresh", "perturb": "none", "alpha": 0.0}
PINNED: dict[str, dict] = {
    "random": {**_NO_AUGMENTATION, "iterations": 0},
    "dm": _NO_AUGMENTATION,
    "iem": {},
}


def condense(method: str, task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """Run a registered method."""
    if method not in METHODS:
        raise ValueError(f"unknown condensation method {method!r}: choose from {sorted(METHODS)}")
    return METHODS[method](task, settings)


__all__ = ["METHODS", "PINNED", "CondenseResult", "CondenseSettings", "CondenseTask",
           "Interrupted", "condense"]
