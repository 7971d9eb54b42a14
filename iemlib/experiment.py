"""Config → run → Record, and the results cache.

A ``Config`` names a data set, a condensation method, images per class, code length, hashing
method, profile and seed; unset knobs come from the profile, then from the method (``PINNED``).
``run`` condenses, trains a fresh hashing network on the synthetic set, encodes the query set
and the database, and returns a JSON-ready record. ``run_cached`` reuses a record already on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from . import __version__
from .condense import METHODS, PINNED, CondenseSettings, CondenseTask, condense
from .data import Protocol, load_protocol
from .files import atomic_write
from .hashing import LOSSES, HashingSettings, encode, train_hashing
from .retrieval import mean_average_precision, precision_at_k

PROFILES: dict[str, dict] = {
    # seconds: tiny slices of real data, for CI and nbval
    "smoke": dict(query_per_class=10, train_per_class=50, database_per_class=100, image_size=32,
                  iterations=10, real_batch=16, checkpoint_every=5, early_steps=5, pool_size=2,
                  hash_steps=30, hash_batch=64),
    # minutes on 2 CPU cores: the full CIFAR-10 protocol, reduced iterations and training
    "cpu": dict(query_per_class=100, train_per_class=500, database_per_class=None, image_size=64,
                iterations=200, real_batch=64, checkpoint_every=25, early_steps=50, pool_size=4,
                hash_steps=400, hash_batch=128),
    # the paper's scale, meant for a GPU
    "paper": dict(query_per_class=100, train_per_class=500, database_per_class=None,
                  image_size=224, iterations=20000, real_batch=256, checkpoint_every=500,
                  early_steps=200, pool_size=10, hash_steps=5000, hash_batch=256),
}

# IEM's own defaults: network augmentation on (a fresh random θ_init each iteration, perturbed
# filter-wise with α 0.05), multi-formation factor 2 (3 above 64 px). `fresh` won over `pool`,
# `early` and `fixed` in the cpu profile (CIFAR-10, 10 img/cls, 32 bits, seed 0; chapter 02).
IEM_DEFAULTS = dict(network="fresh", perturb="filter", alpha=0.05)


@dataclass(frozen=True)
class Config:
    """Every setting of one run, under the CLI's names; None means "from the profile"."""

    dataset: str = "cifar10"
    method: str = "iem"
    ipc: int = 10
    bits: int = 32
    hash: str = "dhd"
    profile: str = "cpu"
    seed: int = 0
    # condensation
    iterations: int | None = None
    real_batch: int | None = None
    lr: float = 1.0
    momentum: float = 0.5
    factor: int | None = None
    network: str | None = None
    perturb: str | None = None
    alpha: float | None = None
    pool_size: int | None = None
    early_steps: int | None = None
    checkpoint_every: int | None = None
    backbone: str = "convnet"
    # hashing
    hash_steps: int | None = None
    hash_batch: int | None = None
    hash_lr: float = 1e-3
    hash_weight_decay: float = 5e-4
    # protocol
    query_per_class: int | None = None
    train_per_class: int | None = None
    database_per_class: int | None = None
    image_size: int | None = None

    def resolved(self) -> "Config":
        """Fill unset knobs from the profile and the method; validate everything."""
        self.validate_names()
        values = {k: v for k, v in asdict(self).items() if v is not None}
        profile = dict(PROFILES[self.profile])
        if self.dataset == "cifar10":
            profile["image_size"] = 32
        method_defaults = dict(IEM_DEFAULTS) if self.method == "iem" else {}
        size = values.get("image_size", profile["image_size"])
        method_defaults.setdefault("factor", 2 if size <= 64 else 3)
        merged = {**profile, **method_defaults, **values, **PINNED[self.method]}
        config = Config(**{f.name: merged.get(f.name) for f in fields(Config)})
        config.validate_numbers()
        return config

    def validate_names(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose from {sorted(METHODS)}")
        if self.hash not in LOSSES:
            raise ValueError(f"unknown hashing method {self.hash!r}: choose from {sorted(LOSSES)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: choose from {sorted(PROFILES)}")
        if self.dataset != "cifar10" and not Path(self.dataset).expanduser().is_dir():
            raise ValueError(f"unknown data set {self.dataset!r}: expected 'cifar10' or an "
                             "ImageFolder path")

    def validate_numbers(self) -> None:
        if self.bits < 1:
            raise ValueError(f"bits must be >= 1, got {self.bits}")
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        needed = self.ipc * (self.factor or 1) ** 2
        if self.train_per_class is not None and needed > self.train_per_class:
            raise ValueError(f"ipc {self.ipc} (× factor² = {needed} real images) is larger than the "
                             f"{self.train_per_class} training images of a class")

    def key(self) -> str:
        """A short hash of the resolved settings: the cache key."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def condense_settings(self) -> CondenseSettings:
        names = {f.name for f in fields(CondenseSettings)}
        return CondenseSettings(**{k: v for k, v in asdict(self).items() if k in names})

    def hashing_settings(self) -> HashingSettings:
        return HashingSettings(loss=self.hash, backbone=self.backbone, steps=self.hash_steps,
                               batch_size=self.hash_batch, lr=self.hash_lr,
                               weight_decay=self.hash_weight_decay)

    def protocol(self) -> Protocol:
        return load_protocol(self.dataset, seed=self.seed, query_per_class=self.query_per_class,
                             train_per_class=self.train_per_class,
                             database_per_class=self.database_per_class,
                             image_size=None if self.dataset == "cifar10" else self.image_size)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Where a record was made: device, host CPU and library versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": str(device), "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "iemlib": __version__, "platform": platform.platform()}


def retrieval_metrics(query_codes, db_codes, query_labels, db_labels) -> dict:
    """The metrics every record reports."""
    return {
        "map": mean_average_precision(query_codes, db_codes, query_labels, db_labels),
        "map_at_1000": mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=1000),
        "precision_at_100": precision_at_k(query_codes, db_codes, query_labels, db_labels, 100),
    }


def run(config: Config, *, device: str = "auto", checkpoint: Path | None = None,
        resume: bool = False, synthetic_out: Path | None = None, progress: bool = True,
        protocol: Protocol | None = None) -> dict:
    """Condense, train, evaluate; return the record (a JSON-ready dict)."""
    config = config.resolved()
    target = resolve_device(device)
    protocol = protocol or config.protocol()
    task = CondenseTask(protocol.train, protocol.num_classes, protocol.mean, protocol.std,
                        seed=config.seed, device=target, progress=progress,
                        checkpoint=checkpoint, resume=resume)
    result = condense(config.method, task, config.condense_settings())
    if synthetic_out is not None:
        result.synthetic.save(synthetic_out, dtype=torch.uint8)

    start = time.perf_counter()
    images, labels = result.synthetic.decode()
    net, train_losses = train_hashing(images, labels, bits=config.bits,
                                      num_classes=protocol.num_classes, mean=protocol.mean,
                                      std=protocol.std, settings=config.hashing_settings(),
                                      seed=config.seed, device=target, progress=progress)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    query_codes = encode(net, protocol.query.images, device=target, progress=progress)
    db_codes = encode(net, protocol.database.images, device=target, progress=progress)
    metrics = retrieval_metrics(query_codes, db_codes, protocol.query.labels, protocol.database.labels)
    eval_s = time.perf_counter() - start

    return {
        "config": asdict(config),
        "key": config.key(),
        "metrics": metrics,
        "timings": {"condense_s": result.seconds, "train_s": train_s, "eval_s": eval_s},
        "history": {"condense_loss": result.history, "hash_loss": train_losses},
        "condense_info": result.info,
        "synthetic": {"stored": len(result.synthetic), "decoded": len(images),
                      "file": synthetic_out.name if synthetic_out else None},
        "env": environment(target),
        "split": protocol.split_summary(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_record(record: dict, path: Path) -> None:
    """Write a record as JSON, atomically."""
    atomic_write(path, lambda stream: stream.write(json.dumps(record, indent=1) + "\n"), binary=False)


def record_path(config: Config, results_dir: Path) -> Path:
    """Where the cache keeps the record of a (resolved) config."""
    data = "cifar10" if config.dataset == "cifar10" else Path(config.dataset).name
    name = f"{config.method}-ipc{config.ipc}-{config.bits}b-{config.hash}-s{config.seed}-{config.key()}.json"
    return Path(results_dir) / config.profile / data / name


def run_cached(config: Config, results_dir: str | os.PathLike = "results", **kwargs) -> dict:
    """The record of ``config`` from ``results_dir`` if present, else run it and store it there.

    The synthetic set is stored beside the record (uint8), so chapters can show it.
    """
    config = config.resolved()
    path = record_path(config, Path(results_dir))
    if path.exists():
        return json.loads(path.read_text())
    record = run(config, synthetic_out=path.with_suffix(".pt"), **kwargs)
    write_record(record, path)
    return record


def with_overrides(config: Config, **overrides) -> Config:
    """A copy of ``config`` with some settings changed (None values are ignored)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
