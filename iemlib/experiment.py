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

from . import __version__, distributed
from .classification import accuracy, held_out, train_classifier
from .condense import (METHODS, PINNED, CondenseResult, CondenseSettings, CondenseTask,
                       condense, dsa, engine, idc)
from .data import DATASETS, Protocol, image_folder, load_protocol
from .files import atomic_write
from .hashing import LOSSES, HashingSettings, encode, train_hashing
from .models import BACKBONES
from .retrieval import (mean_average_precision, precision_curve, precision_recall_curve,
                        rank_database)
from .snapshots import Snapshots, compare, snapshot_path
from .synthetic import SyntheticSet
from .training import TrainSettings

PROFILES: dict[str, dict] = {
    # seconds: tiny slices of real data, for CI and nbval
    "smoke": dict(query_per_class=10, train_per_class=50, database_per_class=100,
                  iterations=10, real_batch=16, checkpoint_every=5, early_steps=5, pool_size=2,
                  train_steps=30, train_batch=64),
    # minutes on 2 CPU cores: the full CIFAR-10 protocol, reduced iterations and training
    "cpu": dict(query_per_class=100, train_per_class=500, database_per_class=None,
                iterations=200, real_batch=64, checkpoint_every=25, early_steps=50, pool_size=4,
                train_steps=400, train_batch=128),
    # the paper's scale, meant for a GPU
    "paper": dict(query_per_class=100, train_per_class=500, database_per_class=None,
                  iterations=20000, real_batch=256, checkpoint_every=500,
                  early_steps=200, pool_size=10, train_steps=5000, train_batch=256,
                  precision="bf16"),
}

# What changes with the kind of data set. CIFAR-10 runs at 32 px on ConvNet-3 with the counts
# above. ImageFolder sets (imagenet10/20 or a path) follow the ImageNet-subset protocol instead:
# 130 training images a class drawn from train/, the database all of train/, the queries all of
# val/ (smoke keeps its slices); ResNetAP-10 at 224 px in the paper profile. On 2 CPU cores
# ResNetAP-10 costs ~4× ConvNet-3's time at 32 px and ~15× at 64 px (a cpu-profile run: ~18 min
# and over an hour, against ~5 min), so the cpu profile runs ConvNet-3 at 32 px.
DATASET_PROFILES: dict[str, dict[str, dict]] = {
    "cifar10": {name: dict(image_size=32, backbone="convnet") for name in PROFILES},
    "folder": {
        "smoke": dict(image_size=32, backbone="convnet"),
        "cpu": dict(query_per_class=None, train_per_class=130, database_per_class=None,
                    image_size=32, backbone="convnet"),
        "paper": dict(query_per_class=None, train_per_class=130, database_per_class=None,
                      image_size=224, backbone="resnetap"),
    },
}

# The methods whose real branch runs through condense.engine (precision, compile_mode).
EMBEDDING_MATCHING = frozenset({"dm", "iem"})

# IEM's own defaults: network augmentation on (a fresh random θ_init each iteration, perturbed
# filter-wise with α 0.05), multi-formation factor 2 (3 above 64 px). `fresh` won over `pool`,
# `early` and `fixed` in the cpu profile (CIFAR-10, 10 img/cls, 32 bits, seed 0; chapter 02).
IEM_DEFAULTS = dict(network="fresh", perturb="filter", alpha=0.05)


def gradient_matching_defaults(method: str, profile: str, ipc: int) -> dict:
    """DSA's and IDC's image steps, loops, real batch and image step size (others: none).

    paper: the references' settings (``dsa.reference_settings``, ``idc.reference_settings``).
    cpu: 100 image steps, loops capped (see the comment below). smoke: 4 image steps, 2 networks.
    """
    if method not in ("dsa", "idc"):
        return {}
    reference = dsa.reference_settings(ipc) if method == "dsa" else idc.reference_settings(ipc)
    if profile == "paper":
        return reference
    # cpu: measured on CIFAR-10 (ConvNet-3, 32 px, ipc 10, real batch 64; one thread, in units of
    # one cpu-profile IEM iteration, ~1.2 s on 2 idle cores): the matching of an image step costs
    # ~1.1 (DSA) / ~1.8 (IDC), a network step ~0.14 (DSA: 100 synthetic images) / ~0.06 (IDC: 64
    # real images). With the references' loops (DSA: 50 network steps between image steps, IDC:
    # 32) an IEM-like budget holds only ~40-80 image steps, so DSA keeps its outer loop and caps
    # both loops at 10, and IDC keeps a network for 50 image steps (reference 100) with 10 network
    # steps between them. 20 steps of each ran at ~2.2 (DSA) / ~2.4 (IDC) units a step, so 100
    # steps take ~4.5-5 min at ipc 10 (IEM's 200 iterations: ~4 min); ipc 1 ~1.5 / ~3 min; ipc 50
    # ~9 / ~14 min (IDC matches 128 decoded images a class).
    if profile == "cpu" and method == "dsa":
        return {"iterations": 100, "outer_loop": min(reference["outer_loop"], 10),
                "inner_loop": min(reference["inner_loop"], 10), "lr": reference["lr"]}
    if profile == "cpu":
        return {"iterations": 100, "outer_loop": 50, "inner_loop": 10, "lr": reference["lr"]}
    # smoke: an image step costs ~3 of IEM's at ipc 2, so fewer steps and a smaller real batch
    return {"iterations": 4, "outer_loop": 2, "inner_loop": 1, "real_batch": 8,
            "lr": reference["lr"]}


@dataclass(frozen=True)
class Config:
    """Every setting of one run, under the CLI's names; None means "from the profile"."""

    dataset: str = "cifar10"
    method: str = "iem"
    ipc: int = 10
    bits: int | None = 32          # code length (None once resolved for --task classify)
    hash: str | None = "dhd"       # hashing method (likewise)
    profile: str = "cpu"
    seed: int = 0
    task: str = "retrieval"     # retrieval (mAP of hash codes) | classify (test accuracy)
    # condensation
    iterations: int | None = None
    real_batch: int | None = None
    lr: float | None = None             # image step (normalised units); None: 1.0, DSA/IDC theirs
    momentum: float = 0.5
    factor: int | None = None
    network: str | None = None
    perturb: str | None = None
    alpha: float | None = None
    pool_size: int | None = None
    early_steps: int | None = None
    checkpoint_every: int | None = None
    outer_loop: int | None = None       # dsa/idc: image steps per network
    inner_loop: int | None = None       # dsa/idc: network steps between two image steps
    precision: str | None = None        # dm/iem real branch: fp32 | bf16 (None: fp32)
    compile_mode: str | None = None     # dm/iem embedding forward: off | a torch.compile mode (None: off)
    backbone: str | None = None         # convnet | resnetap; None: by data set and profile
    # training the evaluated network (hashing, or the classifier of --task classify)
    train_steps: int | None = None
    train_batch: int | None = None
    train_lr: float = 1e-3
    train_weight_decay: float = 5e-4
    # protocol
    query_per_class: int | None = None
    train_per_class: int | None = None
    database_per_class: int | None = None
    image_size: int | None = None
    classes: str | None = None          # ImageFolder class folders, comma-separated; None: all

    def resolved(self) -> "Config":
        """Fill unset knobs from the profile and the method; validate everything."""
        self.validate_names()
        values = {k: v for k, v in asdict(self).items() if v is not None}
        if self.classes is not None:
            values["classes"] = ",".join(self.class_list())
        kind = "cifar10" if self.dataset == "cifar10" else "folder"
        profile = {**PROFILES[self.profile], **DATASET_PROFILES[kind][self.profile]}
        method_defaults = dict(IEM_DEFAULTS) if self.method == "iem" else {}
        size = values.get("image_size", profile["image_size"])
        method_defaults.setdefault("factor", 2 if size <= 64 else 3)
        method_defaults.update(gradient_matching_defaults(self.method, self.profile, self.ipc))
        method_defaults.setdefault("lr", 1.0)
        merged = {**profile, **method_defaults, **values, **PINNED[self.method]}
        if self.method not in EMBEDDING_MATCHING:  # the real-branch settings mean nothing there
            merged["precision"] = merged["compile_mode"] = None
        if self.method == "whole":  # trains on every training image, whatever ipc was asked
            merged["ipc"] = merged["train_per_class"]
        if self.task == "classify":  # no codes: one record whatever bits and hash were asked
            merged["bits"] = merged["hash"] = None
        config = Config(**{f.name: merged.get(f.name) for f in fields(Config)})
        config.validate_numbers()
        return config

    def validate_names(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose from {sorted(METHODS)}")
        if self.hash not in LOSSES and not (self.task == "classify" and self.hash is None):
            raise ValueError(f"unknown hashing method {self.hash!r}: choose from {sorted(LOSSES)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose from {list(TASKS)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: choose from {sorted(PROFILES)}")
        if self.dataset not in DATASETS and image_folder(self.dataset) is None:
            raise ValueError(f"unknown data set {self.dataset!r}: choose from {list(DATASETS)}, "
                             "an ImageFolder path or a folder of the data root")
        engine.validate(self.precision or "fp32", self.compile_mode or "off")
        if (self.precision or self.compile_mode) and self.method not in EMBEDDING_MATCHING:
            raise ValueError(f"precision and compile_mode set how {sorted(EMBEDDING_MATCHING)} "
                             f"forward real images; {self.method} has no such forward")
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}: choose from {sorted(BACKBONES)}")
        if self.classes is not None and self.dataset in DATASETS:
            raise ValueError(f"classes picks the class folders of an ImageFolder path; "
                             f"{self.dataset} has a fixed class list")
        if self.classes is not None and not all(self.class_list()):
            raise ValueError(f"classes must be comma-separated folder names, got {self.classes!r}")

    def class_list(self) -> tuple[str, ...] | None:
        """``classes`` as a tuple of folder names (None: all classes)."""
        return None if self.classes is None else tuple(c.strip() for c in self.classes.split(","))

    def validate_numbers(self) -> None:
        if self.bits is not None and self.bits < 1:
            raise ValueError(f"bits must be >= 1, got {self.bits}")
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        needed = self.ipc * (self.factor or 1) ** 2
        if self.train_per_class is not None and needed > self.train_per_class:
            raise ValueError(f"ipc {self.ipc} (× factor² = {needed} real images) is larger than the "
                             f"{self.train_per_class} training images of a class")
        self.condense_settings()  # each settings class checks its own numbers
        self.train_settings()

    def key(self) -> str:
        """A short hash of the resolved settings: the cache key of a record.

        Settings left None (those a method does not use) are not part of it, so adding a knob
        for one method leaves the keys of the others' records unchanged.
        """
        return _short_hash({k: v for k, v in asdict(self).items() if v is not None})

    def condense_key(self) -> str:
        """The cache key of the condensed set: the settings that shape it, and nothing after it."""
        return _short_hash({k: v for k, v in asdict(self).items()
                            if v is not None and k not in TRAINING_FIELDS})

    def condense_settings(self) -> CondenseSettings:
        names = {f.name for f in fields(CondenseSettings)}
        return CondenseSettings(**{k: v for k, v in asdict(self).items()
                                   if k in names and v is not None})

    def train_settings(self) -> TrainSettings:
        """How the evaluated network (hashing net or classifier) is trained."""
        return TrainSettings(backbone=self.backbone, steps=self.train_steps,
                             batch_size=self.train_batch, lr=self.train_lr,
                             weight_decay=self.train_weight_decay)

    def hashing_settings(self) -> HashingSettings:
        return HashingSettings(loss=self.hash, **asdict(self.train_settings()))

    def protocol(self) -> Protocol:
        return load_protocol(self.dataset, seed=self.seed, query_per_class=self.query_per_class,
                             train_per_class=self.train_per_class,
                             database_per_class=self.database_per_class,
                             image_size=self.image_size,
                             classes=self.class_list())


# Settings that act after condensation: one condensed set serves every value of these.
TRAINING_FIELDS = frozenset({"task", "bits", "hash", "train_steps", "train_batch", "train_lr",
                             "train_weight_decay"})


def _short_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def resolve_device(device: str = "auto") -> torch.device:
    """auto: cuda where there is a GPU, else cpu; under torchrun cuda is this process's GPU.
    Raises ValueError for a device this machine does not have (or a name torch does not know)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = distributed.local_device(torch.device(device))
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        if not count or (resolved.index or 0) >= count:
            raise ValueError(f"device {device!r}: PyTorch sees {count} CUDA GPU(s) here "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                             "use --device cpu or auto")
    return resolved


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
            "torch": torch.__version__, "iemlib": __version__, "platform": platform.platform(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# Precision@k curve points, and how many database items the gallery keeps for each query.
PRECISION_KS = tuple(range(100, 1001, 100))
GALLERY_TOP = 10


def retrieval_metrics(query_codes, db_codes, query_labels, db_labels) -> dict:
    """The metrics every record reports, with the curves and the gallery the book draws.

    ``pr_curve`` is precision and recall at Hamming radius 0..bits; ``precision_at_k`` maps each
    k of PRECISION_KS to P@k; ``gallery`` holds the first query of each class (query indices)
    and the database indices of its GALLERY_TOP nearest codes.
    """
    precision, recall = precision_recall_curve(query_codes, db_codes, query_labels, db_labels)
    at_k = precision_curve(query_codes, db_codes, query_labels, db_labels, PRECISION_KS)
    firsts = [int((query_labels == c).nonzero()[0]) for c in query_labels.unique().tolist()]
    top = rank_database(query_codes[firsts], db_codes)[:, :GALLERY_TOP]
    return {
        "map": mean_average_precision(query_codes, db_codes, query_labels, db_labels),
        "map_at_1000": mean_average_precision(query_codes, db_codes, query_labels, db_labels, topk=1000),
        "precision_at_100": at_k[0],
        "precision_at_k": dict(zip(map(str, PRECISION_KS), at_k)),
        "pr_curve": {"precision": precision.tolist(), "recall": recall.tolist()},
        "gallery": {"queries": firsts, "retrieved": top.tolist()},
    }


def run(config: Config, *, device: str = "auto", checkpoint: Path | None = None,
        resume: bool = False, synthetic_out: Path | None = None, progress: bool = True,
        protocol: Protocol | None = None) -> dict | None:
    """Condense (or reuse the set stored at ``synthetic_out``), train, evaluate; return the record.

    The network is trained on the stored set (uint8 pixels), so a record made with a reused set
    equals one made by condensing afresh. Under torchrun every process condenses its share of
    the classes, and only the main process goes on to store, train and evaluate; the others
    return None.
    """
    config = config.resolved()
    target = resolve_device(device)
    protocol = protocol or config.protocol()
    main = distributed.is_main()
    task = condense_task(config, protocol, target, progress=progress and main,
                         checkpoint=checkpoint, resume=resume)
    result = condense_stored(config, task, synthetic_out)
    if not main:
        return None
    images, labels = result.synthetic.decode()
    evaluate = EVALUATIONS[config.task]
    metrics, timings, train_losses = evaluate(config, protocol, images, labels, target, progress)
    return {
        "config": asdict(config),
        "key": config.key(),
        "metrics": metrics,
        "timings": {"condense_s": result.seconds, **timings},
        "history": {"condense_loss": result.history, "train_loss": train_losses},
        "condense_info": result.info,
        "synthetic": {"stored": len(result.synthetic), "decoded": len(images),
                      "file": synthetic_out.name if synthetic_out else None,
                      "condense_key": config.condense_key()},
        "env": environment(target),
        "split": protocol.split_summary(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def condense_task(config: Config, protocol: Protocol, device: torch.device, *,
                  progress: bool = True, checkpoint: Path | None = None,
                  resume: bool = False) -> CondenseTask:
    """The condensation task of a (resolved) config on its protocol's training split."""
    return CondenseTask(protocol.train, protocol.num_classes, protocol.mean, protocol.std,
                        seed=config.seed, device=device, progress=progress,
                        checkpoint=checkpoint, resume=resume)


def condense_stored(config: Config, task: CondenseTask, path: Path | None) -> CondenseResult:
    """The condensed set stored at ``path`` by an earlier run of the same settings, or a new one.

    A new set is stored at ``path`` (uint8) with its condensation time, loss history and info
    beside it (``.meta.json``) and, for methods that optimise images, its snapshots
    (``.snapshots.pt``); it comes back quantised as it was stored.
    """
    meta_path = path.with_suffix(".meta.json") if path else None
    if path and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("condense_key") == config.condense_key():
            info = {**meta["info"], "reused": path.name}
            return CondenseResult(SyntheticSet.load(path), meta["history"], meta["seconds"], info)
    result = condense(config.method, task, config.condense_settings())
    result.synthetic = SyntheticSet.from_state(result.synthetic.state(torch.uint8))
    if distributed.world_size() > 1:
        result.info["processes"] = distributed.world_size()
    if path and distributed.is_main():
        result.synthetic.save(path, dtype=torch.uint8)
        if result.snapshots is not None:
            result.snapshots.save(snapshot_path(path))
        write_json(set_meta(config, result, task.device), meta_path)
    return result


def set_meta(config: Config, result: CondenseResult, device: torch.device) -> dict:
    """What a stored set's ``.meta.json`` says of the run that made it."""
    return {"condense_key": config.condense_key(), "seconds": result.seconds,
            "history": result.history, "info": result.info, "env": environment(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def snapshots_of(config: Config, results_dir: str | os.PathLike = "results", *,
                 device: str = "auto", progress: bool = True,
                 recondense: bool = True) -> Snapshots | None:
    """The snapshots of the condensed set of ``config`` (None for a method without iterations).

    A set stored before snapshots existed has none beside it: with ``recondense`` its
    condensation runs again (seeded, resumable from ``<set>.snapshots.ckpt.pt``), and ``check``
    records how far the re-run's final images are from the stored set (``snapshots.compare``);
    the seconds are the re-run's. Without ``recondense`` such a set has None. A set not stored
    yet is condensed and stored with its snapshots.
    """
    config = config.resolved()
    synthetic = synthetic_path(config, Path(results_dir))
    path = snapshot_path(synthetic)
    if path.exists():
        return Snapshots.load(path)
    if not config.iterations or (synthetic.exists() and not recondense):
        return None
    task = condense_task(config, config.protocol(), resolve_device(device), progress=progress,
                         checkpoint=path.with_suffix(".ckpt.pt"), resume=True)
    if not synthetic.exists():
        snapshots = condense_stored(config, task, synthetic).snapshots
    else:
        snapshots = condense(config.method, task, config.condense_settings()).snapshots
        snapshots.check = compare(SyntheticSet.load(synthetic).state(torch.uint8)["images"],
                                  snapshots.images[-1])
        snapshots.save(path)
    task.checkpoint.unlink(missing_ok=True)
    return snapshots


def evaluate_retrieval(config: Config, protocol: Protocol, images: torch.Tensor,
                       labels: torch.Tensor, device: torch.device, progress: bool):
    """Train a hashing network on the images; mAP of the query codes against the database."""
    start = time.perf_counter()
    net, losses = train_hashing(images, labels, bits=config.bits, num_classes=protocol.num_classes,
                                mean=protocol.mean, std=protocol.std,
                                settings=config.hashing_settings(), seed=config.seed,
                                device=device, progress=progress)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    query_codes = encode(net, protocol.query.images, device=device, progress=progress)
    db_codes = encode(net, protocol.database.images, device=device, progress=progress)
    metrics = retrieval_metrics(query_codes, db_codes, protocol.query.labels, protocol.database.labels)
    return metrics, {"train_s": train_s, "eval_s": time.perf_counter() - start}, losses


def evaluate_classification(config: Config, protocol: Protocol, images: torch.Tensor,
                            labels: torch.Tensor, device: torch.device, progress: bool):
    """Train a classifier on the images; top-1 accuracy on the held-out images (``held_out``)."""
    start = time.perf_counter()
    net, losses = train_classifier(images, labels, num_classes=protocol.num_classes,
                                   mean=protocol.mean, std=protocol.std,
                                   settings=config.train_settings(), seed=config.seed,
                                   device=device, progress=progress)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    test_images, test_labels = held_out(protocol)
    metrics = {"accuracy": accuracy(net, test_images, test_labels, device=device, progress=progress)}
    return metrics, {"train_s": train_s, "eval_s": time.perf_counter() - start}, losses


# task name -> (config, protocol, images, labels, device, progress) -> (metrics, timings, losses)
EVALUATIONS = {"retrieval": evaluate_retrieval, "classify": evaluate_classification}
TASKS = tuple(EVALUATIONS)


def write_json(value: dict, path: Path) -> None:
    """Write JSON atomically."""
    atomic_write(path, lambda stream: stream.write(json.dumps(value, indent=1) + "\n"), binary=False)


def write_record(record: dict, path: Path) -> None:
    """Write a record as JSON, atomically."""
    write_json(record, path)


def data_name(config: Config) -> str:
    """The results folder of a data set: its name, or the folder's name (+ how many classes)."""
    if config.dataset in DATASETS:
        return config.dataset
    name = Path(config.dataset).expanduser().resolve().name
    return name if config.classes is None else f"{name}-{len(config.class_list())}classes"


def record_path(config: Config, results_dir: Path) -> Path:
    """Where the cache keeps the record of a (resolved) config."""
    name = f"{config.method}-ipc{config.ipc}-{config.bits}b-{config.hash}-s{config.seed}-{config.key()}.json"
    if config.task != "retrieval":
        name = f"{config.task}-{config.method}-ipc{config.ipc}-s{config.seed}-{config.key()}.json"
    return Path(results_dir) / config.profile / data_name(config) / name


def synthetic_path(config: Config, results_dir: Path) -> Path:
    """Where the cache keeps the condensed set of a (resolved) config, shared by all its records."""
    name = f"{config.method}-ipc{config.ipc}-s{config.seed}-{config.condense_key()}.pt"
    return Path(results_dir) / config.profile / data_name(config) / "synthetic" / name


def run_cached(config: Config, results_dir: str | os.PathLike = "results", **kwargs) -> dict:
    """The record of ``config`` from ``results_dir`` if present, else run it and store it there.

    The condensed set is stored under ``synthetic/`` (uint8) and shared by every record made
    from it (other code lengths, hashing methods, the classification task); chapters show it.
    A killed run resumes from its checkpoint beside the set.
    """
    config = config.resolved()
    path = record_path(config, Path(results_dir))
    if path.exists():
        return json.loads(path.read_text())
    synthetic = synthetic_path(config, Path(results_dir))
    kwargs.setdefault("checkpoint", synthetic.with_suffix(".ckpt.pt"))
    kwargs.setdefault("resume", True)
    record = run(config, synthetic_out=synthetic, **kwargs)
    write_record(record, path)
    kwargs["checkpoint"].unlink(missing_ok=True)
    return record


# The scalar metrics, as a summary names them (records also hold curves and a gallery).
METRIC_LABELS = {"map": "mAP@all", "map_at_1000": "mAP@1000", "precision_at_100": "P@100",
                 "accuracy": "top-1 accuracy"}


def summary(record: dict) -> str:
    """One line: what ran and what it scored."""
    c = record["config"]
    what = f"{c['method']} ipc={c['ipc']}"
    if c.get("task", "retrieval") == "retrieval":
        what += f" bits={c['bits']} {c['hash']}"
    scores = "  ".join(f"{label} {record['metrics'][name]:.4f}"
                       for name, label in METRIC_LABELS.items() if name in record["metrics"])
    return f"{what} [{c['profile']}] {c.get('task', 'retrieval')}: {scores}"


def with_overrides(config: Config, **overrides) -> Config:
    """A copy of ``config`` with some settings changed (None values are ignored)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
