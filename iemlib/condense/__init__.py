"""Condensation methods behind one registry.

Each method is ``condense(task, settings) -> CondenseResult``; ``PINNED`` lists the settings a
method fixes (DM has no network or data augmentation), so a record shows what really ran;
a setting a method ignores is pinned to None, which keeps it out of the record's key.
"""

from __future__ import annotations

from typing import Callable

from . import dm, dsa, herding, idc, iem, random, whole
from .base import CondenseResult, CondenseSettings, CondenseTask, Interrupted

METHODS: dict[str, Callable[[CondenseTask, CondenseSettings], CondenseResult]] = {
    "random": random.condense,
    "dm": dm.condense,
    "iem": iem.condense,
    "herding": herding.condense,
    "whole": whole.condense,
    "dsa": dsa.condense,
    "idc": idc.condense,
}

_NO_AUGMENTATION = {"factor": 1, "network": "fresh", "perturb": "none", "alpha": 0.0}
PINNED: dict[str, dict] = {
    "random": {**_NO_AUGMENTATION, "iterations": 0},
    "dm": _NO_AUGMENTATION,
    "iem": {},
    # one early network embeds the training set; selection has no iterations
    "herding": {"factor": 1, "iterations": 0, "network": "early", "pool_size": 1,
                "perturb": None, "alpha": None, "real_batch": None, "checkpoint_every": None},
    # the whole training set (Config.resolved sets ipc to the training images a class)
    "whole": {"factor": 1, "iterations": 0, "network": None, "perturb": None, "alpha": None,
              "real_batch": None, "checkpoint_every": None, "pool_size": None,
              "early_steps": None},
    # gradient matching draws its own networks (condense.gradient_matching); DSA has no
    # multi-formation, IDC's factor comes from the image size as IEM's does
    "dsa": {"factor": 1, "network": None, "perturb": None, "alpha": None, "pool_size": None,
            "early_steps": None},
    "idc": {"network": None, "perturb": None, "alpha": None, "pool_size": None,
            "early_steps": None},
}


def condense(method: str, task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """Run a registered method."""
    if method not in METHODS:
        raise ValueError(f"unknown condensation method {method!r}: choose from {sorted(METHODS)}")
    return METHODS[method](task, settings)


__all__ = ["METHODS", "PINNED", "CondenseResult", "CondenseSettings", "CondenseTask",
           "Interrupted", "condense"]
