"""Sweeps: a grid of configurations run through the results cache.

A configuration already recorded is not run again, so an interrupted sweep picks up where it
stopped (a killed condensation resumes from its checkpoint). A configuration that fails is
recorded under ``failed/`` with its error, and the sweep goes on; it is tried again next time.
Configurations that share a condensed set run one after another, so the set is made once.
"""

from __future__ import annotations

import itertools
import json
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm.auto import tqdm

from .experiment import Config, data_name, record_path, run_cached, summary, write_json

# Every setting can be an axis of a sweep; these are the columns of every sweep table.
GRID_AXES = tuple(f.name for f in fields(Config))
TABLE_COLUMNS = ("dataset", "method", "ipc", "bits", "hash", "seed", "task")


@dataclass
class Outcome:
    """What became of one configuration of a sweep."""

    config: Config
    status: str                  # cached | ran | failed
    record: dict | None = None
    error: str | None = None


def grid(base: Config, **axes: Sequence) -> list[Config]:
    """Every combination of the axes' values applied to ``base`` (unresolved), in order.

    Duplicates (e.g. ``whole`` at several ipc, which it ignores) are kept once after resolution;
    configurations that would reuse one condensed set are put next to each other.
    """
    unknown = set(axes) - set(GRID_AXES)
    if unknown:
        raise ValueError(f"cannot sweep over {sorted(unknown)}: choose from {list(GRID_AXES)}")
    names = list(axes)
    combos = [replace(base, **dict(zip(names, values)))
              for values in itertools.product(*(list(axes[n]) for n in names))]
    unique: dict[str, Config] = {}
    for config in combos:
        unique.setdefault(_identity(config), config)
    return sorted(unique.values(), key=_group_order(list(unique.values())))


def _identity(config: Config) -> str:
    try:
        return config.resolved().key()
    except ValueError:
        return json.dumps(asdict(config), sort_keys=True)  # invalid: kept, fails when run


def _group_order(configs: list[Config]) -> Callable[[Config], int]:
    """Sort key that keeps the grid's order but pulls configs sharing a condensed set together."""
    first: dict[str, int] = {}
    for i, config in enumerate(configs):
        first.setdefault(_condense_identity(config), i)
    return lambda config: first[_condense_identity(config)]


def _condense_identity(config: Config) -> str:
    try:
        return config.resolved().condense_key()
    except ValueError:
        return _identity(config)


def failure_path(config: Config, results_dir: Path) -> Path:
    """Where a failed configuration is recorded (next to where its record would be)."""
    try:
        path = record_path(config.resolved(), results_dir)
    except ValueError:  # an invalid configuration: named by its settings as given
        path = record_path(config, results_dir)
    return path.parent / "failed" / path.name


def run_sweep(configs: Iterable[Config], results_dir: str | Path = "results", *,
              device: str = "auto", progress: bool = True) -> list[Outcome]:
    """Run every configuration not yet recorded; never stop for one that fails."""
    results_dir = Path(results_dir)
    configs = list(configs)
    outcomes = []
    bar = tqdm(configs, desc="sweep", disable=not progress)
    for config in bar:
        bar.set_postfix_str(f"{config.method} ipc={config.ipc} bits={config.bits}", refresh=True)
        outcomes.append(run_one(config, results_dir, device=device, progress=progress))
        if progress:
            tqdm.write(f"[{outcomes[-1].status}] {_describe(outcomes[-1])}")
    return outcomes


def run_one(config: Config, results_dir: Path, *, device: str, progress: bool) -> Outcome:
    """One configuration through the cache, its failure recorded instead of raised."""
    failed = failure_path(config, results_dir)
    try:
        resolved = config.resolved()
        cached = record_path(resolved, results_dir).exists()
        record = run_cached(resolved, results_dir, device=device, progress=progress)
    except Exception as error:  # one bad configuration must not stop the sweep
        message = f"{type(error).__name__}: {error}"
        write_json({"config": asdict(config), "error": message,
                    "traceback": traceback.format_exc(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, failed)
        return Outcome(config, "failed", error=message)
    failed.unlink(missing_ok=True)
    return Outcome(resolved, "cached" if cached else "ran", record)


def _describe(outcome: Outcome) -> str:
    if outcome.record is not None:
        return summary(outcome.record)
    c = outcome.config
    return f"{c.method} ipc={c.ipc} bits={c.bits} {c.hash} [{c.profile}]: {outcome.error}"


def table(outcomes: Sequence[Outcome]) -> str:
    """The sweep's outcomes as an aligned text table: the usual columns, any other setting that
    varies across the sweep, the score and the condensation time."""
    given = [{**asdict(o.config), "dataset": data_name(o.config)} for o in outcomes]
    varied = [name for name in GRID_AXES if name not in TABLE_COLUMNS
              and len({json.dumps(g[name]) for g in given}) > 1]
    columns = ["status", *TABLE_COLUMNS, *varied, "score", "condense s"]
    rows = [[o.status, *(_cell(g[name]) for name in (*TABLE_COLUMNS, *varied)), *_score(o)]
            for o, g in zip(outcomes, given)]
    return aligned([columns, *rows])


def aligned(rows: Sequence[Sequence[object]]) -> str:
    """Rows of cells (the first the header) as text, each column as wide as its widest cell."""
    widths = [max(len(str(x)) for x in column) for column in zip(*rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
                     for row in rows)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _score(outcome: Outcome) -> tuple[str, str]:
    if outcome.record is None:
        return "failed", ""
    m = outcome.record["metrics"]
    score = (f"acc {m['accuracy']:.4f}" if "accuracy" in m
             else f"mAP {m['map']:.4f} @1000 {m['map_at_1000']:.4f}")
    return score, f"{outcome.record['timings']['condense_s']:.1f}"
