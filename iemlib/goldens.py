"""Goldens: the key numbers of the chapters executed in the smoke profile, kept and checked.

``tests/goldens/<chapter>.json`` holds what a chapter showed with
:func:`iemlib.keynumbers.show_key_numbers`, and how far each number may move::

    {"profile": "smoke",
     "tolerance": {"default": {"abs": 0.5, "rel": 0.0}, "<name>": {"abs": 2.0}},
     "numbers": {"<name>": 31.25, ...}}

A number passes when it is within ``abs`` or within ``rel`` (a fraction of the golden value) of
its golden; a name in ``tolerance`` loosens or tightens that one number. :func:`write_goldens`
makes the files from a folder of executed notebooks (keeping their tolerances) and
:func:`check_goldens` lists every difference; neither executes anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import atomic_write
from .keynumbers import read_key_numbers

# The smoke runs are seeded and reproduce themselves exactly on one machine (nbval checks their
# printed output), but CI runs them on another machine of the same kind, where another thread
# count or math-library kernel can change the last bits of a sum. Over a few dozen training
# steps that can flip a hash bit or swap two neighbours in one query's ranking: a few points of
# that query's AP, a few hundredths of a point of the mean over the smoke protocol's 100
# queries. A real regression (a broken loss, a wrong split, another default) moves the numbers by
# points. Key numbers are percentages, so the default allows 0.5 points and nothing relative.
DEFAULT_TOLERANCE = {"abs": 0.5, "rel": 0.0}
GOLDENS = Path("tests", "goldens")
MAKE_HINT = "`make goldens` (python -m iemlib goldens write {executed})"


def golden_path(goldens: str | os.PathLike, notebook: str | os.PathLike) -> Path:
    """The golden of an executed notebook: ``<goldens>/<notebook stem>.json``."""
    return Path(goldens) / f"{Path(notebook).stem}.json"


def executed_notebooks(executed: str | os.PathLike) -> list[Path]:
    """The executed notebooks in a folder, by name; a clear error when there is no folder."""
    executed = Path(executed)
    if not executed.is_dir():
        raise FileNotFoundError(f"no folder of executed notebooks {executed}: run `make nbval` "
                                "(the notebook step of `make test`) first")
    return sorted(executed.glob("*.ipynb"))


def executed_profile(notebook: str | os.PathLike) -> str | None:
    """The ``profile`` parameter papermill executed ``notebook`` with (None if not given)."""
    metadata = json.loads(Path(notebook).read_text()).get("metadata", {})
    return metadata.get("papermill", {}).get("parameters", {}).get("profile")


def tolerance(golden: dict, name: str) -> dict[str, float]:
    """``abs`` and ``rel`` for one number: its own entry, else the golden's default."""
    given = golden.get("tolerance", {})
    return {**DEFAULT_TOLERANCE, **given.get("default", {}), **given.get(name, {})}


def write_goldens(executed: str | os.PathLike, goldens: str | os.PathLike = GOLDENS) -> list[Path]:
    """Write (or refresh) the golden of every executed notebook that shows key numbers.

    A refreshed golden keeps its tolerances; its numbers and profile come from the notebook.
    """
    written = []
    for notebook in executed_notebooks(executed):
        numbers = read_key_numbers(notebook)
        if not numbers:
            continue
        profile = executed_profile(notebook)
        if profile is None:
            raise ValueError(f"{notebook} was not executed by papermill with a profile "
                             "parameter (-p profile smoke)")
        path = golden_path(goldens, notebook)
        old = json.loads(path.read_text()) if path.exists() else {}
        golden = {"profile": profile,
                  "tolerance": old.get("tolerance", {"default": dict(DEFAULT_TOLERANCE)}),
                  "numbers": numbers}
        atomic_write(path, lambda s: s.write(json.dumps(golden, indent=2) + "\n"), binary=False)
        written.append(path)
    return written


def check_goldens(executed: str | os.PathLike, goldens: str | os.PathLike = GOLDENS) -> list[str]:
    """Every difference between the executed notebooks' key numbers and their goldens."""
    notebooks = executed_notebooks(executed)
    problems = []
    for notebook in notebooks:
        path = golden_path(goldens, notebook)
        numbers = read_key_numbers(notebook)
        if path.exists():
            golden = json.loads(path.read_text())
            problems += compare(numbers, golden, executed_profile(notebook), notebook.stem)
        elif numbers:
            problems.append(f"{notebook.stem}: shows key numbers but has no golden {path}; "
                            f"create it with {MAKE_HINT.format(executed=executed)}")
    stems = {notebook.stem for notebook in notebooks}
    problems += [f"{path.stem}: golden {path} but no executed notebook {path.stem}.ipynb in "
                 f"{executed}" for path in sorted(Path(goldens).glob("*.json"))
                 if path.stem not in stems]
    return problems


def compare(numbers: dict[str, float], golden: dict, profile: str | None = None,
            label: str = "notebook") -> list[str]:
    """The differences between one notebook's key numbers (executed with ``profile``) and its
    golden: numbers out of tolerance, names on one side only, another profile."""
    problems = []
    if profile != golden["profile"]:
        problems.append(f"{label}: executed with profile {profile}, "
                        f"its golden is for {golden['profile']}")
    for name, expected in golden["numbers"].items():
        if name not in numbers:
            problems.append(f"{label}: {name} is in the golden but the notebook does not show it")
            continue
        limit = tolerance(golden, name)
        allowed = max(limit["abs"], limit["rel"] * abs(expected))
        difference = abs(numbers[name] - expected)
        if not difference <= allowed:
            problems.append(f"{label}: {name} = {numbers[name]:.4f}, golden {expected:.4f} "
                            f"(differs by {difference:.4f}, tolerance {allowed:.4f})")
    problems += [f"{label}: {name} = {numbers[name]:.4f} has no golden; refresh the goldens "
                 f"with `make goldens`" for name in numbers if name not in golden["numbers"]]
    return problems
