"""Notebook sweeps: one notebook executed with papermill for every combination of parameters.

Each combination makes one executed copy in a build folder, named by its parameters
(``<stem>-alpha=0.01-seed=0.ipynb``). A copy that exists is not executed again unless forced,
so an interrupted sweep picks up where it stopped. A combination that fails leaves its partly
executed copy under ``failed/`` and the sweep goes on; it is tried again next time. The key
numbers each copy shows (:mod:`iemlib.keynumbers`) are collected into one table,
``summary.csv`` beside the copies. papermill and jupytext come from the ``[book]`` extra.
"""

from __future__ import annotations

import ast
import csv
import importlib
import itertools
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from .files import atomic_write
from .keynumbers import read_key_numbers
from .sweep import aligned

KERNEL = "python3"
SUMMARY = "summary.csv"

# (notebook, executed copy to write, parameters, working directory); raises when a cell fails
Execute = Callable[[Path, Path, dict, Path], None]


@dataclass
class NotebookRun:
    """What became of one combination of a notebook sweep."""

    parameters: dict[str, object]
    path: Path                   # the executed copy (under failed/ when it failed)
    status: str                  # ran | skipped | failed
    numbers: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def parse_value(text: str) -> object:
    """A command-line value: a Python literal when it is one (``0.1``, ``3``, ``None``,
    ``(1, 10)``, ``'0.1'``), else the text itself (``cpu``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parameter_grid(parameters: Mapping[str, Sequence]) -> list[dict[str, object]]:
    """Every combination of the values, in order (the last parameter varies fastest)."""
    for name, values in parameters.items():
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a parameter name")
        if not len(values):
            raise ValueError(f"parameter {name!r} has no values")
    names = list(parameters)
    return [dict(zip(names, values)) for values in itertools.product(*parameters.values())]


def copy_name(stem: str, parameters: Mapping[str, object]) -> str:
    """``<stem>-<name>=<value>-....ipynb``; characters unsafe in a file name become ``_``."""
    parts = [stem, *(f"{name}={value}" for name, value in parameters.items())]
    return re.sub(r"[^\w.,+=-]", "_", "-".join(parts)) + ".ipynb"


def default_out(notebook: str | os.PathLike) -> Path:
    """Where a sweep of ``notebook`` writes by default: ``_build/sweeps/<stem>``."""
    return Path("_build", "sweeps", Path(notebook).stem)


def sweep_notebook(notebook: str | os.PathLike, parameters: Mapping[str, Sequence],
                   out: str | os.PathLike | None = None, *, force: bool = False,
                   progress: bool = True, cwd: str | os.PathLike | None = None,
                   execute: Execute | None = None) -> list[NotebookRun]:
    """Execute ``notebook`` (py:percent or .ipynb) once for every combination of
    ``parameters`` (name -> values) into ``out``; write and return the summary.

    The kernel runs in ``cwd`` (default: the working directory). Names must be set in the
    notebook's cell tagged ``parameters``; nothing runs otherwise.
    """
    notebook, out = Path(notebook), Path(out or default_out(notebook))
    combinations = _named(notebook.stem, parameter_grid(parameters))
    cwd = Path(cwd or Path.cwd())
    with _as_ipynb(notebook) as source:
        check_parameters(source, list(parameters), shown_as=notebook)
        runs = []
        bar = tqdm(combinations.items(), desc=f"sweep {notebook.stem}", unit="run",
                   disable=not progress)
        for name, combination in bar:
            bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in combination.items()))
            runs.append(_run_one(source, out / name, combination, force=force, cwd=cwd,
                                 execute=execute or _papermill))
            if progress:
                tqdm.write(f"[{runs[-1].status}] {runs[-1].path}")
    write_summary(runs, out / SUMMARY)
    return runs


def _named(stem: str, combinations: list[dict]) -> dict[str, dict]:
    """Each combination under its copy's name; repeated ones once, clashing names refused."""
    named: dict[str, dict] = {}
    for combination in combinations:
        name = copy_name(stem, combination)
        if named.setdefault(name, combination) != combination:
            raise ValueError(f"{named[name]} and {combination} would both be written to {name}")
    return named


def check_parameters(notebook: Path, names: Sequence[str], shown_as: Path | None = None) -> None:
    """A ValueError unless every name is set in the notebook's ``parameters`` cell."""
    if not names:
        return
    declared = _book_module("papermill").inspect_notebook(str(notebook))
    unknown = [name for name in names if name not in declared]
    if unknown:
        raise ValueError(f"{shown_as or notebook} has no parameter {', '.join(unknown)} (its "
                         f"cell tagged 'parameters' sets: {', '.join(declared) or 'nothing'})")


def _run_one(source: Path, copy: Path, parameters: dict, *, force: bool, cwd: Path,
             execute: Execute) -> NotebookRun:
    failed = copy.parent / "failed" / copy.name
    if copy.exists() and not force:
        return NotebookRun(parameters, copy, "skipped", read_key_numbers(copy))
    partial = copy.parent / "partial" / copy.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    try:
        execute(source, partial, parameters, cwd)
    except Exception as error:  # one failed combination must not stop the sweep
        copy.unlink(missing_ok=True)  # a forced rerun failed: the old copy is not its result
        failed.parent.mkdir(exist_ok=True)
        if partial.exists():
            os.replace(partial, failed)
        return NotebookRun(parameters, failed, "failed", error=_message(error))
    os.replace(partial, copy)
    failed.unlink(missing_ok=True)
    return NotebookRun(parameters, copy, "ran", read_key_numbers(copy))


def _message(error: Exception) -> str:
    if hasattr(error, "ename"):  # papermill's PapermillExecutionError: the cell's exception
        return f"{error.ename}: {error.evalue} (In [{error.exec_count}])"
    return f"{type(error).__name__}: {error}"


def _papermill(source: Path, output: Path, parameters: dict, cwd: Path) -> None:
    # absolute paths: papermill writes the output from inside cwd
    _book_module("papermill").execute_notebook(
        str(source.resolve()), str(output.resolve()), parameters=parameters, kernel_name=KERNEL,
        cwd=str(cwd), progress_bar=False)


@contextmanager
def _as_ipynb(notebook: Path) -> Iterator[Path]:
    """``notebook`` itself when it is an .ipynb, else its jupytext conversion (made once)."""
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook {notebook}")
    if notebook.suffix == ".ipynb":
        yield notebook
        return
    jupytext = _book_module("jupytext")
    with tempfile.TemporaryDirectory(prefix="iemlib-sweep-") as folder:
        source = Path(folder) / f"{notebook.stem}.ipynb"
        jupytext.write(jupytext.read(notebook), source)
        yield source


def _book_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"notebook sweeps need {name}, from iemlib's [book] extra: "
                          f"pip install -e '.[book]'") from error


def summary_rows(runs: Sequence[NotebookRun]) -> tuple[list[str], list[list[object]]]:
    """The header and one row a combination: status, parameter values, key numbers (None where
    a copy did not show one), error. The key numbers are every name any copy showed, in order of
    appearance (``<name> (key number)`` where a parameter has the same name)."""
    parameters = list(dict.fromkeys(p for run in runs for p in run.parameters))
    numbers = list(dict.fromkeys(n for run in runs for n in run.numbers))
    taken = {"status", "error", *parameters}
    header = ["status", *parameters,
              *(f"{n} (key number)" if n in taken else n for n in numbers), "error"]
    rows = [[run.status, *(run.parameters.get(p) for p in parameters),
             *(run.numbers.get(n) for n in numbers), run.error] for run in runs]
    return header, rows


def write_summary(runs: Sequence[NotebookRun], path: Path) -> None:
    """The summary as CSV: full floats, empty cells for what a run did not show."""
    header, rows = summary_rows(runs)

    def write(stream) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerows([header, *([_text(x, full=True) for x in row] for row in rows)])

    atomic_write(path, write, binary=False)


def summary_table(runs: Sequence[NotebookRun]) -> str:
    """The summary as aligned text: floats to 4 significant digits, no error column."""
    header, rows = summary_rows(runs)
    return aligned([header[:-1], *([_text(x, full=False) for x in row[:-1]] for row in rows)])


def _text(value: object, full: bool) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) and not full else str(value)
