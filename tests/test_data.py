"""Tests for iemlib.data: CIFAR-10 binary parsing, the retrieval protocol, ImageFolder loading.

The CIFAR-10 parse is checked against a hand read of the raw 3,073-byte records (plain
``open().read()``, no numpy), and the protocol against set arithmetic on its indices.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iemlib.data as data
from iemlib.data import (
    CIFAR10_BIN_MD5,
    IMAGENET20_CLASSES,
    IMAGENET_SUBSETS,
    DatasetError,
    data_root,
    load_cifar10,
    load_protocol,
)

RECORD = 3073


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def cifar_root(data_root) -> Path:
    if not (data_root / "cifar-10-batches-bin").is_dir():
        pytest.skip(f"CIFAR-10 binary batches not found under {data_root}")
    return data_root


@pytest.fixture(scope="module")
def cifar(cifar_root):
    return load_cifar10(str(cifar_root))


@pytest.fixture(scope="module")
def protocol(cifar_root):
    return load_protocol("cifar10", root=cifar_root, seed=0)


def _set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


def _write_png(path: Path, colour, size, mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


# Colours per class; train images at full strength, test/val at a lower level so a query can be
# told from a database image by its pixels alone.
TRAIN_COLOUR = {"ant": (200, 0, 0), "bee": (0, 200, 0), "cat": (0, 0, 200)}
TEST_COLOUR = {"ant": (90, 0, 0), "bee": (0, 90, 0), "cat": (0, 0, 90)}
GRAY_VALUE = 50


def _make_folder(root: Path, query_split: str = "test") -> Path:
    """train/: ant 4, bee 3, cat 5 (one grayscale 'L'); <query_split>/: 2 a class; mixed sizes."""
    counts = {"ant": 4, "bee": 3, "cat": 5}
    sizes = [(10, 10), (7, 13), (20, 6), (16, 16), (5, 9)]
    for name, n in counts.items():
        for i in range(n):
            _write_png(root / "train" / name / f"img{i}.png", TRAIN_COLOUR[name], sizes[i % len(sizes)])
        for i in range(2):
            _write_png(root / query_split / name / f"q{i}.png", TEST_COLOUR[name], sizes[(i + 2) % 5])
    # Replace one cat training image by a grayscale one.
    (root / "train" / "cat" / "img4.png").unlink()
    _write_png(root / "train" / "cat" / "img4.png", GRAY_VALUE, (11, 3), mode="L")
    # Files that are not images are ignored.
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------- #
# CIFAR-10 protocol on the real data
# --------------------------------------------------------------------------- #
def test_cifar_protocol_sizes_and_per_class_counts(protocol):
    assert (len(protocol.query), len(protocol.database), len(protocol.train)) == (1000, 59000, 5000)
    assert protocol.num_classes == 10
    for split, per_class in ((protocol.query, 100), (protocol.train, 500)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
    assert torch.bincount(protocol.database.labels, minlength=10).tolist() == [5900] * 10
    assert protocol.image_shape == (3, 32, 32)


def test_cifar_protocol_disjoint_cover_and_subset(protocol):
    q, db, tr = (_set(s.indices) for s in (protocol.query, protocol.database, protocol.train))
    assert len(q) == 1000 and len(db) == 59000 and len(tr) == 5000  # no duplicates
    assert not q & db
    assert q | db == set(range(60000))
    assert tr <= db


def test_cifar_protocol_dtypes_and_contents_match_indices(protocol, cifar):
    images, labels = cifar
    assert images.dtype == torch.uint8 and images.shape == (60000, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (60000,)
    for split in (protocol.query, protocol.database, protocol.train):
        assert split.images.dtype == torch.uint8
        assert split.images.shape == (len(split), 3, 32, 32)
        assert split.labels.dtype == torch.int64
        assert torch.equal(split.labels, labels[split.indices])
    for split in (protocol.query, protocol.train):
        assert torch.equal(split.images, images[split.indices])


def test_cifar_protocol_is_a_function_of_the_seed(cifar_root, protocol):
    again = load_protocol("cifar10", root=cifar_root, seed=0)
    for a, b in ((again.query, protocol.query), (again.train, protocol.train),
                 (again.database, protocol.database)):
        assert torch.equal(a.indices, b.indices)
    assert again.split_summary()["sha256"] == protocol.split_summary()["sha256"]
    other = load_protocol("cifar10", root=cifar_root, seed=1)
    assert not torch.equal(other.query.indices, protocol.query.indices)
    assert not torch.equal(other.train.indices, protocol.train.indices)
    assert other.split_summary()["sha256"] != protocol.split_summary()["sha256"]


def test_cifar_protocol_per_class_counts_are_parameters(cifar_root):
    p = load_protocol("cifar10", root=cifar_root, seed=3, query_per_class=5, train_per_class=7,
                      database_per_class=20)
    assert (len(p.query), len(p.database), len(p.train)) == (50, 200, 70)
    assert torch.bincount(p.query.labels, minlength=10).tolist() == [5] * 10
    assert torch.bincount(p.database.labels, minlength=10).tolist() == [20] * 10
    assert torch.bincount(p.train.labels, minlength=10).tolist() == [7] * 10
    assert _set(p.train.indices) <= _set(p.database.indices)
    assert not _set(p.query.indices) & _set(p.database.indices)
    assert p.counts == {"query_per_class": 5, "train_per_class": 7, "database_per_class": 20}


# --------------------------------------------------------------------------- #
# the binary parse against a hand read of the records
# --------------------------------------------------------------------------- #
def _hand_record(path: Path, k: int) -> tuple[int, bytes]:
    with open(path, "rb") as handle:
        raw = handle.read()
    record = raw[k * RECORD:(k + 1) * RECORD]
    assert len(record) == RECORD
    return record[0], record[1:]


@pytest.mark.parametrize("batch, offset, k", [
    ("data_batch_2.bin", 10000, 0),
    ("data_batch_2.bin", 10000, 4321),
    ("data_batch_2.bin", 10000, 9999),
    ("data_batch_1.bin", 0, 17),
    ("test_batch.bin", 50000, 0),
    ("test_batch.bin", 50000, 9999),
])
def test_binary_parse_matches_hand_read(cifar_root, cifar, batch, offset, k):
    images, labels = cifar
    label, pixels = _hand_record(cifar_root / "cifar-10-batches-bin" / batch, k)
    assert int(labels[offset + k]) == label
    image = images[offset + k].tolist()  # [channel][row][col]
    for channel in range(3):  # R plane, then G, then B; each row-major
        for row in range(32):
            start = channel * 1024 + row * 32
            assert image[channel][row] == list(pixels[start:start + 32]), (channel, row)


def test_all_labels_in_file_order(cifar_root, cifar):
    _, labels = cifar
    expected: list[int] = []
    for name in CIFAR10_BIN_MD5:  # data_batch_1 … data_batch_5, then test_batch
        with open(cifar_root / "cifar-10-batches-bin" / name, "rb") as handle:
            raw = handle.read()
        assert len(raw) == 10000 * RECORD
        expected += list(raw[0::RECORD])
    assert labels.tolist() == expected
    # The test batch (indices 50000..59999) is exactly balanced, 1,000 a class.
    assert torch.bincount(labels[50000:], minlength=10).tolist() == [1000] * 10


# --------------------------------------------------------------------------- #
# ImageFolder data sets
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("query_split", ["test", "val"])
def test_image_folder_protocol(tmp_path, query_split):
    root = _make_folder(tmp_path / "folder", query_split)
    p = load_protocol(str(root), seed=0, image_size=8, train_per_class=2)
    assert p.class_names == ("ant", "bee", "cat")  # sorted folder names
    assert p.num_classes == 3
    assert (len(p.query), len(p.database), len(p.train)) == (6, 12, 6)
    assert torch.bincount(p.database.labels, minlength=3).tolist() == [4, 3, 5]
    assert torch.bincount(p.query.labels, minlength=3).tolist() == [2, 2, 2]
    assert torch.bincount(p.train.labels, minlength=3).tolist() == [2, 2, 2]
    assert _set(p.train.indices) <= _set(p.database.indices)
    for split in (p.query, p.database, p.train):
        assert split.images.dtype == torch.uint8
        assert split.images.shape == (len(split), 3, 8, 8)
        assert split.labels.dtype == torch.int64
    names = p.class_names
    # Queries come from the query split: their pixels are the test colours of their class.
    for image, label in zip(p.query.images, p.query.labels):
        colour = torch.tensor(TEST_COLOUR[names[label]], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(image, colour.expand(3, 8, 8))
    # Database images come from train/; the grayscale one is RGB with equal channels.
    grays = 0
    for image, label in zip(p.database.images, p.database.labels):
        if torch.equal(image, torch.full((3, 8, 8), GRAY_VALUE, dtype=torch.uint8)):
            grays += 1
            assert names[label] == "cat"
            continue
        colour = torch.tensor(TRAIN_COLOUR[names[label]], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(image, colour.expand(3, 8, 8))
    assert grays == 1


def test_image_folder_defaults_and_seed(tmp_path):
    root = _make_folder(tmp_path / "folder")
    a = load_protocol(str(root), seed=0, image_size=4, train_per_class=3)
    b = load_protocol(str(root), seed=0, image_size=4, train_per_class=3)
    assert torch.equal(a.train.indices, b.train.indices)
    assert torch.bincount(a.train.labels, minlength=3).tolist() == [3, 3, 3]
    assert len(a.query) == 6 and len(a.database) == 12  # all of test/ and of train/
    q = load_protocol(str(root), seed=0, image_size=4, query_per_class=1, train_per_class=1)
    assert torch.bincount(q.query.labels, minlength=3).tolist() == [1, 1, 1]


def test_image_folder_by_name_under_the_data_root(tmp_path, monkeypatch):
    _make_folder(tmp_path / "root" / "bugs")
    by_path = load_protocol(str(tmp_path / "root" / "bugs"), seed=0, image_size=4, train_per_class=3)
    by_name = load_protocol("bugs", root=tmp_path / "root", seed=0, image_size=4, train_per_class=3)
    assert torch.equal(by_name.train.images, by_path.train.images) and by_name.name == "bugs"
    monkeypatch.setenv("IEMLIB_DATA", str(tmp_path / "root"))
    from iemlib.experiment import Config
    assert Config(dataset="bugs", method="random", profile="smoke").resolved().dataset == "bugs"
    with pytest.raises(DatasetError, match="no folder at .*bugz"):
        load_protocol("bugz", root=tmp_path / "root")


def test_image_folder_class_smaller_than_train_per_class_is_an_error(tmp_path):
    # The default asks 130 training images a class (the ImageNet protocol); ant has 4. No cap:
    # a silent cap would change the protocol while the record still said 130.
    root = _make_folder(tmp_path / "folder")
    with pytest.raises(ValueError, match=r"class ant: 130 training images asked for.* only 4"):
        load_protocol(str(root), seed=0, image_size=4)
    with pytest.raises(ValueError, match=r"class bee: 4 training images asked for.* only 3"):
        load_protocol(str(root), seed=0, image_size=4, train_per_class=4)


# --------------------------------------------------------------------------- #
# class selection and the built-in ImageNet subsets
# --------------------------------------------------------------------------- #
# The paper's classes (IDC's class100.txt, first 20), written out independently of the library.
PAPER_IMAGENET20 = """n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823
n04589890 n03062245 n01773797 n01735189 n07831146 n07753275 n03085013 n04485082 n02105505
n01983481 n02788148 n03530642 n04435653""".split()


def test_builtin_imagenet_class_lists():
    assert list(IMAGENET20_CLASSES) == PAPER_IMAGENET20
    assert len(set(IMAGENET20_CLASSES)) == 20
    assert all(len(c) == 9 and c[0] == "n" and c[1:].isdigit() for c in IMAGENET20_CLASSES)
    assert IMAGENET_SUBSETS["imagenet20"] == tuple(PAPER_IMAGENET20)
    assert IMAGENET_SUBSETS["imagenet10"] == tuple(PAPER_IMAGENET20[:10])


def test_image_folder_class_selection(tmp_path):
    root = _make_folder(tmp_path / "folder")
    p = load_protocol(str(root), seed=0, image_size=8, train_per_class=2, classes=("cat", "ant"))
    assert p.class_names == ("cat", "ant") and p.num_classes == 2  # labels follow the given order
    assert (len(p.query), len(p.database), len(p.train)) == (4, 9, 4)
    assert torch.bincount(p.database.labels, minlength=2).tolist() == [5, 4]
    assert p.counts["classes"] == ["cat", "ant"]
    for image, label in zip(p.query.images, p.query.labels):
        colour = torch.tensor(TEST_COLOUR[p.class_names[label]], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(image, colour.expand(3, 8, 8))
    for image, label in zip(p.train.images, p.train.labels):
        assert p.class_names[label] in ("cat", "ant")
        assert image[1].max() == 0  # no bee (green) image came in
    # bee alone: 3 training images is then enough.
    bee = load_protocol(str(root), seed=0, image_size=4, classes=("bee",), train_per_class=3)
    assert bee.class_names == ("bee",) and len(bee.train) == 3


@pytest.mark.parametrize("classes, message", [
    (("ant", "dog"), r"unknown classes \['dog'\].*choose from \['ant', 'bee', 'cat'\]"),
    (("ant", "ant"), r"named more than once: \['ant'\]"),
    ((), "non-empty"),
    (("ant", ""), "non-empty"),
])
def test_image_folder_bad_classes(tmp_path, classes, message):
    root = _make_folder(tmp_path / "folder")
    with pytest.raises(ValueError, match=message):
        load_protocol(str(root), seed=0, image_size=4, train_per_class=1, classes=classes)


def test_image_folder_class_missing_from_query_split(tmp_path):
    root = _make_folder(tmp_path / "folder")
    shutil.rmtree(root / "test" / "bee")
    with pytest.raises(DatasetError, match=r"\['bee'\] not found under .*test"):
        load_protocol(str(root), seed=0, image_size=4, train_per_class=1, classes=("ant", "bee"))


def _fake_imagenet(root: Path, classes, per_split=(2, 1)) -> Path:
    """<root>/imagenet with train/ and val/ folders of one-colour images, one colour a class."""
    for k, wnid in enumerate(classes):
        for split, n in zip(("train", "val"), per_split):
            for i in range(n):
                _write_png(root / "imagenet" / split / wnid / f"{i}.png", (k * 10, i * 50, 7), (9, 9))
    return root


@pytest.mark.parametrize("name, count", [("imagenet10", 10), ("imagenet20", 20)])
def test_imagenet_subsets_read_the_builtin_classes(tmp_path, name, count):
    # The folder holds all 20 classes plus an extra; the subset takes its own, in the paper's order.
    root = _fake_imagenet(tmp_path, [*PAPER_IMAGENET20, "n09999999"])
    p = load_protocol(name, root=root, seed=0, image_size=4, train_per_class=1)
    assert p.name == name and p.class_names == tuple(PAPER_IMAGENET20[:count])
    assert (len(p.train), len(p.query), len(p.database)) == (count, count, 2 * count)
    assert p.mean == data.IMAGENET_MEAN
    for image, label in zip(p.database.images, p.database.labels):
        assert int(image[0, 0, 0]) == PAPER_IMAGENET20.index(p.class_names[label]) * 10
    with pytest.raises(ValueError, match="fixed class list"):
        load_protocol(name, root=root, seed=0, image_size=4, classes=("n02869837",))


def test_imagenet10_without_data_names_folder_and_missing_classes(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_protocol("imagenet10", root=tmp_path, seed=0)
    message = str(info.value)
    assert str(tmp_path / "imagenet") in message and "10 of its 10 classes" in message
    assert all(wnid in message for wnid in PAPER_IMAGENET20[:10])
    # Partly there: only the classes missing from val/ are named.
    _fake_imagenet(tmp_path, PAPER_IMAGENET20[:10])
    shutil.rmtree(tmp_path / "imagenet" / "val" / PAPER_IMAGENET20[3])
    with pytest.raises(DatasetError, match=rf"1 of its 10 classes .*val: {PAPER_IMAGENET20[3]}\."):
        load_protocol("imagenet10", root=tmp_path, seed=0, image_size=4)
    # imagenet20 needs ten more.
    with pytest.raises(DatasetError, match=rf"10 of its 20 classes .*train: {PAPER_IMAGENET20[10]} "):
        load_protocol("imagenet20", root=tmp_path, seed=0, image_size=4)


def test_image_folder_without_query_split_raises(tmp_path):
    root = _make_folder(tmp_path / "folder")
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="no test/ or val/"):
        load_protocol(str(root), seed=0, image_size=8)


def test_image_folder_without_train_raises(tmp_path):
    root = _make_folder(tmp_path / "folder")
    shutil.rmtree(root / "train")
    with pytest.raises(DatasetError, match="no train/"):
        load_protocol(str(root), seed=0, image_size=8)


def test_unknown_name_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"unknown data set 'nope'.*imagenet10"):
        load_protocol("nope", seed=0)


def test_imagenette_mini(data_root):
    root = data_root / "imagenette-mini"
    if not root.is_dir():
        pytest.skip(f"imagenette-mini not found under {data_root}")
    p = load_protocol(str(root), seed=0, image_size=32)
    wnids = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
    assert p.class_names == wnids and p.num_classes == 10
    assert (len(p.query), len(p.database), len(p.train)) == (500, 1300, 1300)
    assert torch.bincount(p.query.labels, minlength=10).tolist() == [50] * 10
    assert torch.bincount(p.database.labels, minlength=10).tolist() == [130] * 10
    assert torch.bincount(p.train.labels, minlength=10).tolist() == [130] * 10
    assert p.database.images.shape == (1300, 3, 32, 32)
    assert p.query.images.shape == (500, 3, 32, 32)
    assert p.database.images.dtype == torch.uint8
    assert _set(p.train.indices) <= _set(p.database.indices)
    assert p.mean == data.IMAGENET_MEAN and p.std == data.IMAGENET_STD


# --------------------------------------------------------------------------- #
# bad counts
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("key", ["query_per_class", "train_per_class", "database_per_class",
                                 "image_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_counts_raise(key, value, tmp_path):
    # Checked before any data is read, so no data is needed.
    with pytest.raises(ValueError, match=key):
        load_protocol("cifar10", root=tmp_path, seed=0, **{key: value})


def test_too_many_per_class_raises(cifar_root, tmp_path):
    with pytest.raises(ValueError, match="fewer than"):
        load_protocol("cifar10", root=cifar_root, seed=0, query_per_class=6001)
    with pytest.raises(ValueError, match="training images asked for"):
        load_protocol("cifar10", root=cifar_root, seed=0, query_per_class=1,
                      database_per_class=5, train_per_class=6)
    root = _make_folder(tmp_path / "folder")
    with pytest.raises(ValueError, match="fewer than"):
        load_protocol(str(root), seed=0, image_size=4, query_per_class=3)


# --------------------------------------------------------------------------- #
# missing / corrupt data and the data root (last: these clear load_cifar10's cache)
# --------------------------------------------------------------------------- #
def _copy_cifar(cifar_root: Path, dest: Path, corrupt: str | None = None) -> Path:
    """A copy of the batches under dest (unchanged files as symlinks, ``corrupt`` as a real
    copy with one byte flipped)."""
    src = cifar_root / "cifar-10-batches-bin"
    folder = dest / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in CIFAR10_BIN_MD5:
        if name == corrupt:
            shutil.copyfile(src / name, folder / name)
            with open(folder / name, "r+b") as handle:
                handle.seek(RECORD * 5 + 100)
                byte = handle.read(1)
                handle.seek(RECORD * 5 + 100)
                handle.write(bytes([byte[0] ^ 0xFF]))
        else:
            os.symlink(src / name, folder / name)
    return folder


def test_corrupt_batch_raises_naming_the_file(cifar_root, tmp_path):
    load_cifar10.cache_clear()
    try:
        _copy_cifar(cifar_root, tmp_path, corrupt="data_batch_3.bin")
        with pytest.raises(DatasetError, match=r"corrupt.*data_batch_3\.bin"):
            load_cifar10(str(tmp_path))
        with pytest.raises(DatasetError, match=r"data_batch_3\.bin"):
            load_protocol("cifar10", root=tmp_path, seed=0)
    finally:
        load_cifar10.cache_clear()


def test_missing_batch_raises_naming_the_file(cifar_root, tmp_path):
    folder = _copy_cifar(cifar_root, tmp_path)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DatasetError, match=r"missing.*test_batch\.bin"):
        load_cifar10(str(tmp_path))


def test_missing_folder_names_where_it_looked(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        load_cifar10(str(root))
    assert str(root / "cifar-10-batches-bin") in str(info.value)
    assert str(root / "cifar-10-batches-py") in str(info.value)


def test_data_root_env_var_and_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("IEMLIB_DATA", str(tmp_path / "from-env"))
    assert data_root() == tmp_path / "from-env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    assert data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.delenv("IEMLIB_DATA")
    assert data_root() == Path.home() / ".cache" / "iemlib" / "data"


def test_load_honours_env_var(monkeypatch, tmp_path):
    load_cifar10.cache_clear()
    try:
        monkeypatch.setenv("IEMLIB_DATA", str(tmp_path / "env-root"))
        with pytest.raises(DatasetError, match=str(tmp_path / "env-root")):
            load_cifar10()
        with pytest.raises(DatasetError, match=str(tmp_path / "env-root")):
            load_protocol("cifar10", seed=0)
        # The root argument wins over the environment.
        with pytest.raises(DatasetError) as info:
            load_cifar10(str(tmp_path / "arg-root"))
        assert str(tmp_path / "arg-root") in str(info.value)
        assert "env-root" not in str(info.value)
    finally:
        load_cifar10.cache_clear()
