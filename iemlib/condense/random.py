"""Random: real training images chosen at random, ipc a class (the coreset baseline)."""

from __future__ import annotations

from .base import CondenseResult, CondenseSettings, CondenseTask, timed


def condense(task: CondenseTask, settings: CondenseSettings) -> CondenseResult:
    return timed(lambda: CondenseResult(task.initial_set(settings.ipc, factor=1)))
