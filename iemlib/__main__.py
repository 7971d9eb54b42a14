"""Command line.

``python -m iemlib run ...``                  one configuration → one JSON record
``python -m iemlib sweep ...``                a grid of configurations through the results cache
``python -m iemlib sweep --notebook NB ...``  a notebook executed over a grid of parameters
``python -m iemlib sweep --retime ...``       the grid's stored sets made again, re-timed
``python -m iemlib goldens write|check DIR``  the key-number goldens of executed notebooks
``torchrun --nproc_per_node N -m iemlib run ...``  one run, its classes shared by N processes
``python -m iemlib bench [--json FILE]``      speed against reference-style baselines
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from . import distributed
from .bench import add_bench_options, bench_cli
from .condense import Interrupted
from .data import DatasetError
from .efficiency import retime, retimed
from .experiment import (Config, record_path, resolve_device, run, summary, synthetic_path,
                         write_record)
from .goldens import GOLDENS, check_goldens, executed_notebooks, write_goldens
from .notebook_sweep import (SUMMARY, default_out, parse_value, summary_table,
                             sweep_notebook)
from .sweep import GRID_AXES, grid, run_sweep, table


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"iemlib: error: {message}\n")


RESULTS_DIR, DEVICE = Path("results"), "auto"
EXECUTED = Path("_build", "test", "executed")  # where `make nbval` leaves the smoke runs


def _add_config_options(parser: argparse.ArgumentParser, axes: tuple[str, ...] = ()) -> None:
    """One option per Config field, under the field's own name; ``axes`` take several values
    and stay None when not given (the sweep tells what was given from what was not)."""
    for field in fields(Config):
        kind = {"int": int, "float": float, "str": str}[str(field.type).split(" ")[0]]
        several = field.name in axes
        shown = "from profile" if field.default is None else field.default
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind,
                            nargs="+" if several else None,
                            default=None if several else field.default,
                            help=f"(default: {shown})")


def _add_run_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The results cache, device and quiet; without ``defaults`` they stay None when not given."""
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR if defaults else None,
                        help=f"the results cache (default: {RESULTS_DIR})")
    parser.add_argument("--device", default=DEVICE if defaults else None,
                        help=f"auto, cpu, cuda, cuda:1, ... (default: {DEVICE})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_notebook_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "notebook sweeps",
        "With --notebook, papermill executes the notebook once for every combination of the -p "
        "values (parsed as Python literals when they are, else strings) into --out. The options "
        "above that are given become parameters of the same name: --profile smoke is "
        "-p profile smoke. An executed copy that exists is skipped unless --force; a failed "
        f"one goes to failed/; the key numbers of every copy are collected into {SUMMARY}.")
    group.add_argument("--notebook", type=Path, help="a notebook: py:percent (.py) or .ipynb")
    group.add_argument("-p", "--parameter", dest="parameters", nargs="+", action="append",
                       default=[], metavar=("NAME", "VALUE"),
                       help="a parameter and its values (repeat for more parameters)")
    group.add_argument("--out", type=Path, default=None,
                       help="the folder of the executed copies (default: _build/sweeps/<stem>)")
    group.add_argument("--force", action="store_true", help="execute existing copies again")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m iemlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_parser = commands.add_parser("run", help="condense, train, evaluate, write a record")
    _add_config_options(run_parser)
    run_parser.add_argument("--out", type=Path, default=None,
                            help="the JSON record to write (default: the results cache)")
    _add_run_options(run_parser)
    run_parser.add_argument("--checkpoint", type=Path, default=None,
                            help="condensation checkpoint (default: OUT with .ckpt.pt)")
    run_parser.add_argument("--resume", action="store_true",
                            help="continue from the checkpoint of a killed run")
    sweep_parser = commands.add_parser(
        "sweep", help="run a grid of configurations through the results cache",
        description="Every option takes one or more values; the sweep runs every combination. "
                    "Recorded configurations are skipped, failed ones are recorded under failed/ "
                    "and retried on the next sweep.")
    _add_config_options(sweep_parser, axes=GRID_AXES)
    _add_run_options(sweep_parser, defaults=False)
    sweep_parser.add_argument(
        "--retime", action="store_true",
        help="condense the stored set of each configuration again (on a quiet machine) and, "
             "where it comes out the same, make the new time the set's; records are not rerun")
    _add_notebook_options(sweep_parser)
    goldens_parser = commands.add_parser(
        "goldens", help="write or check the key-number goldens of executed notebooks",
        description="write: a golden for every executed notebook that shows key numbers. "
                    "check: every difference between the notebooks and their goldens.")
    goldens_parser.add_argument("action", choices=("write", "check"))
    goldens_parser.add_argument("executed", type=Path, nargs="?", default=EXECUTED,
                                help=f"the executed notebooks (default: {EXECUTED})")
    goldens_parser.add_argument("--goldens", type=Path, default=GOLDENS,
                                help=f"the goldens folder (default: {GOLDENS})")
    bench_parser = commands.add_parser(
        "bench", help="time the library against reference-style baselines",
        description="Condensation iteration, mAP@all, encoding throughput and peak memory, each "
                    "against a baseline written like the public reference code, in this run on "
                    "this machine, with a check that both compute the same.")
    add_bench_options(bench_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if distributed.launched() and args.command != "run":
        return _error(f"torchrun launches `run` only; run `{args.command}` in one process")
    commands = {"run": run_command, "sweep": sweep_command, "goldens": goldens_command,
                "bench": bench_command}
    return commands[args.command](args)


def _error(message: object) -> int:
    print(f"iemlib: error: {message}", file=sys.stderr)
    return 2


def sweep_command(args: argparse.Namespace) -> int:
    if args.notebook and args.retime:
        return _error("--retime re-times the stored sets of a grid of configurations, "
                      "not a notebook")
    if args.notebook:
        return notebook_sweep_command(args)
    if args.parameters or args.out or args.force:
        return _error("-p, --out and --force sweep a notebook: give --notebook")
    axes = {axis: getattr(args, axis) for axis in GRID_AXES if getattr(args, axis) is not None}
    try:
        configs = grid(Config(), **axes)
    except ValueError as error:
        return _error(error)
    results_dir = args.results_dir or RESULTS_DIR
    if args.retime:
        return retime_command(configs, results_dir, args.device or DEVICE, not args.quiet)
    outcomes = run_sweep(configs, results_dir, device=args.device or DEVICE,
                         progress=not args.quiet)
    print(table(outcomes))
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        print(f"{failed} of {len(outcomes)} configurations failed; see failed/ under "
              f"{results_dir}", file=sys.stderr)
    return 1 if failed else 0


def retime_command(configs: list[Config], results_dir: Path, device: str, progress: bool) -> int:
    """Re-time each stored set of the grid once (its code lengths and hashing methods share it);
    a line each, and status 1 when one could not be re-timed."""
    failed, done = 0, set()
    for config in configs:
        try:
            path = synthetic_path(config.resolved(), results_dir)
            if path in done:
                continue
            done.add(path)
            print(retimed(config, retime(config, results_dir, device=device, progress=progress)),
                  flush=True)
        except (ValueError, FileNotFoundError, DatasetError) as error:
            failed += 1
            print(f"iemlib: error: {config.method} ipc={config.ipc}: {error}", file=sys.stderr)
    return 1 if failed else 0


def notebook_sweep_command(args: argparse.Namespace) -> int:
    out = args.out or default_out(args.notebook)
    try:
        runs = sweep_notebook(args.notebook, _notebook_parameters(args), out, force=args.force,
                              progress=not args.quiet)
    except (ValueError, ImportError, FileNotFoundError) as error:
        return _error(error)
    print(summary_table(runs))
    print(f"summary: {out / SUMMARY}")
    failed = [run for run in runs if run.status == "failed"]
    for run in failed:
        print(f"failed: {run.path}: {run.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed", file=sys.stderr)
    return 1 if failed else 0


def _notebook_parameters(args: argparse.Namespace) -> dict[str, list]:
    """The -p values, and every setting given on the command line, as notebook parameters."""
    given = [(name, [parse_value(v) for v in values]) for name, *values in args.parameters]
    for setting in (*GRID_AXES, "results_dir", "device"):
        value = getattr(args, setting)
        if value is not None:
            given.append((setting, [str(v) if isinstance(v, Path) else v
                                    for v in (value if isinstance(value, list) else [value])]))
    parameters: dict[str, list] = {}
    for name, values in given:
        if not values:
            raise ValueError(f"-p {name} needs at least one value")
        if name in parameters:
            raise ValueError(f"parameter {name} is given twice")
        parameters[name] = values
    return parameters


def bench_command(args: argparse.Namespace) -> int:
    try:
        return bench_cli(args)
    except (ValueError, DatasetError) as error:
        return _error(error)


def goldens_command(args: argparse.Namespace) -> int:
    try:
        if args.action == "write":
            written = write_goldens(args.executed, args.goldens)
            print("\n".join(f"wrote {path}" for path in written) or
                  f"no notebook in {args.executed} shows key numbers: no golden written")
            return 0
        problems = check_goldens(args.executed, args.goldens)
        count = len(executed_notebooks(args.executed))
    except (ValueError, FileNotFoundError) as error:
        return _error(error)
    if problems:
        print(f"{len(problems)} differences from the goldens in {args.goldens}:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        return 1
    print(f"goldens: the key numbers of {count} executed notebooks in {args.executed} match")
    return 0


def run_command(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(Config)}
    try:
        with distributed.session(resolve_device(args.device)) as device:
            config = Config(**values).resolved()
            out = args.out or record_path(config, args.results_dir)
            synthetic = (out.with_suffix(".pt") if args.out
                         else synthetic_path(config, args.results_dir))
            checkpoint = args.checkpoint or synthetic.with_suffix(".ckpt.pt")
            record = run(config, device=str(device), checkpoint=checkpoint, resume=args.resume,
                         synthetic_out=synthetic, progress=not args.quiet)
    except (ValueError, DatasetError, Interrupted) as error:
        return _error(error)
    if record is None:  # another process of a torchrun launch: rank 0 writes the record
        return 0
    write_record(record, out)
    checkpoint.unlink(missing_ok=True)
    print(f"{summary(record)}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
