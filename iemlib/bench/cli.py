"""``python -m iemlib bench``: its options, and the run that prints the table and writes the JSON."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..experiment import write_json
from .condense import CUDA_VARIANTS, VARIANTS
from .report import table
from .sizes import BENCHMARKS, DATA_SOURCES, Sizes
from .suite import run_benchmarks
from .timing import tune_allocator

def add_bench_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m iemlib bench``; their defaults are ``Sizes()``'s."""
    d = Sizes()
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="the benchmarks to run (default: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write the results here as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument("--data", choices=DATA_SOURCES, default=d.data,
                        help="condensation images: CIFAR-10 from $IEMLIB_DATA when there (auto)")
    for name, help_text in (("classes", "condensation: classes"),
                            ("real_per_class", "condensation: real images a class (the batch)"),
                            ("ipc", "condensation: synthetic images a class"),
                            ("queries", "mAP: queries"), ("database", "mAP: database codes"),
                            ("repeats", "timed repeats of each measurement (after a warm-up)"),
                            ("encode_images", "encode: images"),
                            ("resnet_size", "encode: ResNetAP-10 image size"),
                            ("memory_iterations", "memory: DM iterations"),
                            ("loop_iterations", "loop: DM iterations a timed run"),
                            ("peak_size", "the matmul that measures the fp32 peak")):
        default = getattr(d, name)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default,
                            help=f"{help_text} (default: {default})")
    parser.add_argument("--bits", type=int, nargs="+", default=list(d.bits),
                        help=f"mAP: code lengths (default: {' '.join(map(str, d.bits))})")
    parser.add_argument("--variants", nargs="+", default=None,
                        choices=[*VARIANTS, *CUDA_VARIANTS],
                        help="condensation: the library's variants to time "
                             "(default: all; bf16+cudagraphs on CUDA only)")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="condensation: also profile N iterations of the baseline and each "
                             "variant (torch.profiler) and list their busiest operators")


def sizes_from(args: argparse.Namespace) -> Sizes:
    values = {name: getattr(args, name) for name in asdict(Sizes())}
    variants = tuple(args.variants) if args.variants else None
    return Sizes(**{**values, "bits": tuple(args.bits), "variants": variants})


def bench_cli(args: argparse.Namespace) -> int:
    """``python -m iemlib bench``: run, print the table, write the JSON; 1 if a check failed."""
    sizes = sizes_from(args)
    allocator = tune_allocator()
    results = run_benchmarks(sizes, tuple(args.only), args.device, allocator,
                             report=lambda line: print(line, flush=True))
    print(table(results))
    if args.json:
        write_json(results, args.json)
        print(f"results: {args.json}")
    return 0 if results["checks_ok"] else 1
