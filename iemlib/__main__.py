"""Command line: ``python -m iemlib run ...`` (one configuration → one JSON record)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .condense import Interrupted
from .data import DatasetError
from .experiment import Config, record_path, run, summary, synthetic_path, write_record


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"iemlib: error: {message}\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per Config field, under the field's own name."""
    for field in fields(Config):
        kind = {"int": int, "float": float, "str": str}[str(field.type).split(" ")[0]]
        default = None if field.default is None else field.default
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind,
                            default=default, help=f"(default: {default if default is not None else 'from profile'})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m iemlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_parser = commands.add_parser("run", help="condense, train, evaluate, write a record")
    _add_config_options(run_parser)
    run_parser.add_argument("--out", type=Path, default=None,
                            help="the JSON record to write (default: the results cache)")
    run_parser.add_argument("--results-dir", type=Path, default=Path("results"),
                            help="the results cache used when --out is not given")
    run_parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    run_parser.add_argument("--checkpoint", type=Path, default=None,
                            help="condensation checkpoint (default: OUT with .ckpt.pt)")
    run_parser.add_argument("--resume", action="store_true",
                            help="continue from the checkpoint of a killed run")
    run_parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
