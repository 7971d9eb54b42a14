"""Whole: the entire real training set as the "condensed" set (the upper bound of Table I).

Nothing is condensed, so the condensation time is 0 and every setting but the data is ignored;
``Config.resolved`` sets ipc to the training images a class, so one record serves all ipc values.
"""

from __future__ import annotations

import torch

from ..synthetic import SyntheticSet
from ..training import as_float
from .base import CondenseResult, CondenseSettings, CondenseTask


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    """Every training image as float [0, 1], in class-major order; ``settings`` is unused."""
    members = task.class_indices()
    order = torch.cat(members)
    synthetic = SyntheticSet(as_float(task.train.images[order]), task.train.labels[order], factor=1)
    return CondenseResult(synthetic, seconds=0.0,
                          info={"per_class": [len(indices) for indices in members]})
