"""What the benchmarks run (``Sizes``): CIFAR-10 condensation and retrieval shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

BENCHMARKS = ("condense", "loop", "map", "encode", "memory")
DATA_SOURCES = ("auto", "cifar10", "random")


@dataclass(frozen=True)
class Sizes:
    """What the benchmarks run: the defaults are CIFAR-10 condensation and retrieval shapes."""

    classes: int = 10
    real_per_class: int = 256
    ipc: int = 10
    queries: int = 1000
    database: int = 59000
    bits: tuple[int, ...] = (32, 64)
    repeats: int = 5
    encode_images: int = 500
    resnet_size: int = 64
    memory_iterations: int = 3
    loop_iterations: int = 10
    peak_size: int = 4096
    data: str = "auto"
    variants: tuple[str, ...] | None = None   # condensation variants (None: all, see VARIANTS)
    profile: int | None = None   # condensation: iterations to profile each step over (None: none)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            for number in value if isinstance(value, tuple) else [value]:
                if isinstance(number, int) and number < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {number}")
        if not self.bits:
            raise ValueError("--bits needs at least one code length")
        if self.ipc > self.real_per_class:
            raise ValueError(f"--ipc {self.ipc} is larger than --real-per-class "
                             f"{self.real_per_class}: the synthetic set starts from real images")
        if self.data not in DATA_SOURCES:
            raise ValueError(f"--data must be one of {DATA_SOURCES}, got {self.data!r}")
        if self.resnet_size % 8:
            raise ValueError(f"--resnet-size must be a multiple of 8, got {self.resnet_size}")
