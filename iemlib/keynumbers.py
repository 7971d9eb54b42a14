"""Key numbers: the few values of a chapter that regression tests and sweeps read back.

A chapter calls :func:`show_key_numbers`; the values travel in the output's metadata of the
executed notebook (the reader sees a rounded table), where :func:`read_key_numbers` finds them
without re-executing anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

METADATA_KEY = "iemlib_key_numbers"


def show_key_numbers(numbers: dict[str, float], digits: int = 2) -> None:
    """Display ``numbers`` (name -> finite float) and store them in the cell output's metadata."""
    from IPython.display import display

    clean = _checked(numbers)
    shown = {name: f"{value:.{digits}f}" for name, value in clean.items()}
    left, right = max(map(len, shown), default=0), max(map(len, shown.values()), default=0)
    text = "\n".join(f"{n:<{left}}  {v:>{right}}" for n, v in shown.items()) or "no key numbers"
    display({"text/plain": text}, metadata={METADATA_KEY: clean}, raw=True)


def _checked(numbers: dict[str, float]) -> dict[str, float]:
    """``numbers`` as plain floats; a ValueError for what a golden could not hold."""
    clean = {}
    for name, value in numbers.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"key number names must be non-empty strings, got {name!r}")
        if isinstance(value, (str, bytes, bool)):  # float() would take "1.5" and True
            raise ValueError(f"key number {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"key number {name!r} is not finite: {value}")
        clean[name] = value
    return clean


def read_key_numbers(notebook: str | os.PathLike) -> dict[str, float]:
    """Every key number shown in an executed ``.ipynb`` (later cells win on a repeated name)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    numbers: dict[str, float] = {}
    for cell in cells:
        for output in cell.get("outputs", []):
            shown = output.get("metadata", {}).get(METADATA_KEY, {})
            numbers.update({name: float(value) for name, value in shown.items()})
    return numbers
