"""Checks of settings' numbers: one clear ValueError naming the setting, before anything runs."""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

RULES: dict[str, Callable[[float], bool]] = {
    ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1}


def require(settings: object, rule: str, *names: str) -> None:
    """Raise ValueError for the first of ``names`` (attributes of ``settings``) whose value is
    not a finite number satisfying ``rule`` (a key of ``RULES``)."""
    for name in names:
        value = getattr(settings, name)
        if not (isinstance(value, Real) and math.isfinite(value) and RULES[rule](value)):
            raise ValueError(f"{name} must be {rule}, got {value!r}")
