"""Command line.

``python -m iemlib run ...``    one configuration → one JSON record
``python -m iemlib sweep ...``  a grid of configurations through the results cache
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .condense import Interrupted
from .data import DatasetError
from .experiment import Config, record_path, run, summary, synthetic_path, write_record
from .sweep import GRID_AXES, grid, run_sweep, table


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"iemlib: error: {message}\n")


def _add_config_options(parser: argparse.ArgumentParser, axes: tuple[str, ...] = ()) -> None:
    """One option per Config field, under the field's own name; ``axes`` take several values."""
    for field in fields(Config):
        kind = {"int": int, "float": float, "str": str}[str(field.type).split(" ")[0]]
        default = None if field.default is None else field.default
        several = field.name in axes
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind,
                            nargs="+" if several else None,
                            default=[default] if several else default,
                            help=f"(default: {default if default is not None else 'from profile'})")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="the results cache (default: results)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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
    _add_run_options(sweep_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": run_command, "sweep": sweep_command}[args.command](args)


def sweep_command(args: argparse.Namespace) -> int:
    try:
        configs = grid(Config(), **{axis: getattr(args, axis) for axis in GRID_AXES})
    except ValueError as error:
        print(f"iemlib: error: {error}", file=sys.stderr)
        return 2
    outcomes = run_sweep(configs, args.results_dir, device=args.device, progress=not args.quiet)
    print(table(outcomes))
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        print(f"{failed} of {len(outcomes)} configurations failed; see failed/ under "
              f"{args.results_dir}", file=sys.stderr)
    return 1 if failed else 0


def run_command(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(Config)}
    try:
        config = Config(**values).resolved()
        out = args.out or record_path(config, args.results_dir)
        synthetic = out.with_suffix(".pt") if args.out else synthetic_path(config, args.results_dir)
        checkpoint = args.checkpoint or synthetic.with_suffix(".ckpt.pt")
        record = run(config, device=args.device, checkpoint=checkpoint, resume=args.resume,
                     synthetic_out=synthetic, progress=not args.quiet)
    except (ValueError, DatasetError, Interrupted) as error:
        print(f"iemlib: error: {error}", file=sys.stderr)
        return 2
    write_record(record, out)
    checkpoint.unlink(missing_ok=True)
    print(f"{summary(record)}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
