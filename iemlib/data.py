"""Data sets and the retrieval protocol.

One data root holds every data set: the ``root`` argument, else the ``IEMLIB_DATA``
environment variable, else ``~/.cache/iemlib/data``. CIFAR-10 loads from the official binary
batches (``cifar-10-batches-bin``, md5-checked), from torchvision's python batches
(``cifar-10-batches-py``), or through torchvision's download when ``download=True``. Any
ImageFolder root given as a path (with ``train/`` and ``test/`` or ``val/``) is a data set too,
with all its classes or a chosen list. ``imagenet10`` and ``imagenet20`` are the paper's ImageNet
subsets: their built-in class lists read from the ImageFolder ``<data root>/imagenet``.

``load_protocol`` turns a data set into the retrieval protocol: a query set, a database and a
training set drawn from the database, as a pure function of the seed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The paper's ImageNet-20: the first 20 classes of IDC's class100.txt; ImageNet-10 is its first 10.
IMAGENET20_CLASSES = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823",
    "n04589890", "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013",
    "n04485082", "n02105505", "n01983481", "n02788148", "n03530642", "n04435653",
)
IMAGENET_SUBSETS = {"imagenet10": IMAGENET20_CLASSES[:10], "imagenet20": IMAGENET20_CLASSES}
DATASETS = ("cifar10", *IMAGENET_SUBSETS)  # built-in names; any ImageFolder path works too

# The md5s of the official binary release (cifar-10-binary.tar.gz), in load order.
CIFAR10_BIN_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class DatasetError(RuntimeError):
    """A data set is missing, incomplete or corrupt; the message says where it looked."""


@dataclass(frozen=True)
class Split:
    """Images (uint8, N×C×H×W), labels (int64, N) and the indices drawn from the source."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Protocol:
    """The retrieval protocol of one data set: training set, queries and database."""

    name: str
    seed: int
    train: Split
    query: Split
    database: Split
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    counts: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def split_summary(self) -> dict:
        """What a record needs to rebuild and check this split."""
        digest = hashlib.sha256()
        for part in (self.train, self.query, self.database):
            digest.update(part.indices.numpy().astype(np.int64).tobytes())
        return {
            "seed": self.seed,
            "counts": dict(self.counts),
            "sizes": {"train": len(self.train), "query": len(self.query), "database": len(self.database)},
            "sha256": digest.hexdigest(),
            "train_indices": self.train.indices.tolist(),
            "query_indices": self.query.indices.tolist(),
        }


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$IEMLIB_DATA``, else ``~/.cache/iemlib/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("IEMLIB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iemlib" / "data"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cifar_binary(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name, md5 in CIFAR10_BIN_MD5.items():
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"CIFAR-10 binary batch missing: {path}")
        if _md5(path) != md5:
            raise DatasetError(f"CIFAR-10 binary batch corrupt (md5 mismatch): {path}")
        records = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _read_cifar_torchvision(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    parts = [CIFAR10(str(root), train=train, download=download) for train in (True, False)]
    images = np.concatenate([p.data.transpose(0, 3, 1, 2) for p in parts])
    labels = np.concatenate([np.asarray(p.targets, dtype=np.int64) for p in parts])
    return images, labels


@lru_cache(maxsize=2)
def load_cifar10(root: str | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All 60,000 CIFAR-10 images (train batches, then test) as uint8 N×3×32×32, and labels."""
    base = data_root(root)
    binary, python = base / "cifar-10-batches-bin", base / "cifar-10-batches-py"
    if binary.is_dir():
        images, labels = _read_cifar_binary(binary)
    elif python.is_dir() or download:
        try:
            images, labels = _read_cifar_torchvision(base, download)
        except RuntimeError as error:
            raise DatasetError(f"CIFAR-10 python batches unusable under {python}: {error}") from error
    else:
        raise DatasetError(
            f"CIFAR-10 not found: looked for {binary} and {python}. "
            "Set IEMLIB_DATA to the folder that holds one of them, or pass download=True."
        )
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def _class_folders(split_dir: Path, classes: tuple[str, ...] | None) -> list[Path]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if classes is None:
        return folders
    by_name = {p.name: p for p in folders}
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise DatasetError(f"classes {missing} not found under {split_dir}")
    return [by_name[c] for c in classes]


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as error:
        raise DatasetError(f"unreadable image {path}: {error}") from error


@lru_cache(maxsize=4)
def load_image_folder(
    split_dir: str, image_size: int, classes: tuple[str, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """One ImageFolder split as uint8 N×3×S×S images, int64 labels and the class names."""
    folders = _class_folders(Path(split_dir), classes)
    images, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images += [_read_image(p, image_size) for p in files]
        labels += [label] * len(files)
    if not images:
        raise DatasetError(f"no images found under {split_dir}")
    return (
        torch.from_numpy(np.stack(images)),
        torch.tensor(labels, dtype=torch.int64),
        tuple(p.name for p in folders),
    )


def _per_class_draw(labels: torch.Tensor, count: int | None, generator: torch.Generator,
                    names: tuple[str, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Shuffle each class; return the first ``count`` indices and the rest, per class."""
    taken, rest = [], []
    for c, name in enumerate(names):
        members = torch.nonzero(labels == c).flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        n = len(order) if count is None else count
        if n > len(order):
            raise ValueError(f"class {name} has {len(order)} images, fewer than the {n} asked for")
        taken.append(order[:n])
        rest.append(order[n:])
    return taken, rest


def _subset(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> Split:
    indices = torch.sort(indices).values
    return Split(images[indices], labels[indices], indices)


def _check_count(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value}")


def _check_classes(classes: tuple[str, ...] | None) -> None:
    if classes is None:
        return
    if not classes or not all(classes):
        raise ValueError(f"classes must be a non-empty list of folder names, got {list(classes)}")
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        raise ValueError(f"classes named more than once: {twice}")


def load_protocol(
    name: str,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    query_per_class: int | None = None,
    train_per_class: int | None = None,
    database_per_class: int | None = None,
    image_size: int | None = None,
    classes: tuple[str, ...] | None = None,
    download: bool = False,
) -> Protocol:
    """The retrieval protocol of ``name``: ``"cifar10"``, ``"imagenet10"``, ``"imagenet20"`` or
    an ImageFolder path.

    CIFAR-10 ("cifar10-1"): the 60,000 images merged; per class ``query_per_class`` (100)
    queries, the rest the database (``database_per_class`` of them if given), and
    ``train_per_class`` (500) training images drawn from the database. ImageFolder (the
    ImageNet-subset protocol): queries from ``test/`` or ``val/`` (all, or ``query_per_class``),
    database from ``train/`` (all, or ``database_per_class``) and ``train_per_class`` (130) of it
    for training; images are resized to ``image_size`` (224). A class with fewer images than
    asked for is an error, never a silent cap. ``classes`` picks class folders of an ImageFolder
    path (labels follow its order; None: all, sorted); ``imagenet10``/``imagenet20`` fix it.
    The split is a pure function of ``seed``; queries never enter the database.
    """
    for key, value in (("query_per_class", query_per_class), ("train_per_class", train_per_class),
                       ("database_per_class", database_per_class), ("image_size", image_size)):
        _check_count(key, value)
    _check_classes(classes)
    generator = torch.Generator().manual_seed(seed)
    key = name.lower()
    if key in IMAGENET_SUBSETS or key == "cifar10":
        if classes is not None:
            raise ValueError(f"{name} has a fixed class list; to choose classes, name an "
                             "ImageFolder path instead")
    if key == "cifar10":
        return _cifar_protocol(root, generator, seed, query_per_class or 100, train_per_class or 500,
                               database_per_class, image_size, download)
    if key in IMAGENET_SUBSETS:
        path, classes = imagenet_subset(key, root), IMAGENET_SUBSETS[key]
        return _folder_protocol(path, generator, seed, query_per_class, train_per_class or 130,
                                database_per_class, image_size or 224, classes, key)
    path = image_folder(name, root)
    if path is not None:
        return _folder_protocol(path, generator, seed, query_per_class, train_per_class or 130,
                                database_per_class, image_size or 224, classes, str(name))
    raise DatasetError(f"unknown data set {name!r}: choose from {list(DATASETS)}, an ImageFolder "
                       f"path or a folder of the data root (no folder at "
                       f"{Path(name).expanduser().resolve()} or {data_root(root) / name})")


def image_folder(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The ImageFolder ``name`` names: a path, else a folder of the data root (so a record of
    ``imagenette-mini`` means the same on every machine); None when neither exists."""
    for path in (Path(name).expanduser(), data_root(root) / name):
        if path.is_dir():
            return path
    return None


def imagenet_subset(name: str, root: str | os.PathLike | None = None) -> Path:
    """The ImageFolder that holds ``imagenet10``/``imagenet20``: ``<data root>/imagenet``.

    Raises DatasetError naming the folder and the classes missing from its train/ or val/.
    """
    folder = data_root(root) / "imagenet"
    classes = IMAGENET_SUBSETS[name]
    for split in ("train", "val"):
        split_dir = folder / split
        present = {p.name for p in split_dir.iterdir() if p.is_dir()} if split_dir.is_dir() else set()
        missing = [c for c in classes if c not in present]
        if missing:
            raise DatasetError(
                f"{name} reads the ImageFolder {folder}: {len(missing)} of its {len(classes)} "
                f"classes are missing under {split_dir}: {' '.join(missing)}. Put ImageNet's "
                "train/ and val/ class folders there, or set IEMLIB_DATA to the folder above it.")
    return folder


def _draw_database(pool: list[torch.Tensor], database_per_class: int | None,
                   train_per_class: int, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each class's shuffled pool into database and the training images drawn from it."""
    database, train = [], []
    for order, name in zip(pool, names):
        chosen = order if database_per_class is None else order[:database_per_class]
        if train_per_class > len(chosen):
            raise ValueError(f"class {name}: {train_per_class} training images asked for, but the "
                             f"database holds only {len(chosen)}")
        database.append(chosen)
        train.append(chosen[:train_per_class])
    return torch.cat(database), torch.cat(train)


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size:
        return images
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def _cifar_protocol(root, generator, seed, query_per_class, train_per_class, database_per_class,
                    image_size, download) -> Protocol:
    images, labels = load_cifar10(None if root is None else str(root), download)
    images = _resize(images, image_size)
    queries, rest = _per_class_draw(labels, query_per_class, generator, CIFAR10_CLASSES)
    database, train = _draw_database(rest, database_per_class, train_per_class, CIFAR10_CLASSES)
    counts = {"query_per_class": query_per_class, "train_per_class": train_per_class,
              "database_per_class": database_per_class}
    return Protocol("cifar10", seed, _subset(images, labels, train),
                    _subset(images, labels, torch.cat(queries)), _subset(images, labels, database),
                    CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, counts)


def _query_dir(path: Path) -> Path:
    for name in ("test", "val"):
        if (path / name).is_dir():
            return path / name
    raise DatasetError(f"ImageFolder {path} has no test/ or val/ folder for the queries")


def _unknown_classes(train_dir: Path, classes: tuple[str, ...] | None) -> None:
    if classes is None:
        return
    present = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    unknown = [c for c in classes if c not in present]
    if unknown:
        raise ValueError(f"unknown classes {unknown} in {train_dir}: choose from {present}")


def _folder_protocol(path, generator, seed, query_per_class, train_per_class, database_per_class,
                     image_size, classes, name) -> Protocol:
    if not (path / "train").is_dir():
        raise DatasetError(f"ImageFolder {path} has no train/ folder")
    _unknown_classes(path / "train", classes)
    db_images, db_labels, names = load_image_folder(str(path / "train"), image_size, classes)
    q_images, q_labels, _ = load_image_folder(str(_query_dir(path)), image_size, names)
    queries, _ = _per_class_draw(q_labels, query_per_class, generator, names)
    pool, _ = _per_class_draw(db_labels, None, generator, names)
    database, train = _draw_database(pool, database_per_class, train_per_class, names)
    counts = {"query_per_class": query_per_class, "train_per_class": train_per_class,
              "database_per_class": database_per_class, "image_size": image_size}
    if classes is not None:
        counts["classes"] = list(names)
    return Protocol(name, seed, _subset(db_images, db_labels, train),
                    _subset(q_images, q_labels, torch.cat(queries)),
                    _subset(db_images, db_labels, database), names, IMAGENET_MEAN, IMAGENET_STD,
                    counts)
