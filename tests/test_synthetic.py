"""Tests for iemlib.synthetic: initialisation from real images, decoding, saving and loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import iemlib.synthetic as synthetic
from iemlib.augment import decode_tiles
from iemlib.synthetic import SyntheticSet, atomic_save

NUM_CLASSES = 3
PER_CLASS = 6
SIZE = 8


@pytest.fixture()
def real():
    """18 uint8 8×8 images, 6 a class, labels deliberately not sorted by class."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_CLASSES * PER_CLASS, 3, SIZE, SIZE), generator=g,
                           dtype=torch.uint8)
    labels = torch.arange(NUM_CLASSES).repeat(PER_CLASS)  # 0 1 2 0 1 2 ...
    return images, labels


def _half(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="bilinear",
                         antialias=True, align_corners=False)


# --------------------------------------------------------------------------- #
# from_real
# --------------------------------------------------------------------------- #
def test_from_real_factor_one(real):
    images, labels = real
    syn = SyntheticSet.from_real(images, labels, ipc=4, num_classes=NUM_CLASSES,
                                 generator=torch.Generator().manual_seed(1))
    assert len(syn) == 12 and syn.ipc == 4 and syn.factor == 1 and syn.image_size == SIZE
    assert syn.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class-major
    assert syn.images.dtype == torch.float32 and syn.images.shape == (12, 3, SIZE, SIZE)
    assert syn.labels.dtype == torch.int64
    scaled = images.float() / 255
    used = []
    for image, label in zip(syn.images, syn.labels):
        matches = [i for i in range(len(images)) if torch.equal(image, scaled[i])]
        assert len(matches) == 1
        assert labels[matches[0]] == label  # a real image of its own class
        used.append(matches[0])
    assert len(set(used)) == len(used)  # drawn without replacement
    decoded, decoded_labels = syn.decode()
    assert torch.equal(decoded, syn.images) and torch.equal(decoded_labels, syn.labels)


def test_from_real_depends_on_generator(real):
    images, labels = real
    make = lambda seed: SyntheticSet.from_real(images, labels, 2, NUM_CLASSES,  # noqa: E731
                                               torch.Generator().manual_seed(seed))
    assert torch.equal(make(3).images, make(3).images)
    assert not torch.equal(make(3).images, make(4).images)


def test_from_real_factor_two_tiles_four_real_images(real):
    images, labels = real
    syn = SyntheticSet.from_real(images, labels, ipc=1, num_classes=NUM_CLASSES,
                                 generator=torch.Generator().manual_seed(2), factor=2)
    assert syn.images.shape == (3, 3, SIZE, SIZE) and syn.labels.tolist() == [0, 1, 2]
    assert syn.factor == 2 and syn.image_size == SIZE
    small = _half(images.float() / 255)  # each real image downsampled to one 4×4 tile
    decoded, decoded_labels = syn.decode()
    assert decoded.shape == (12, 3, SIZE, SIZE)
    assert decoded_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for k, (image, label) in enumerate(zip(syn.images, syn.labels)):
        used = []
        for j in range(4):
            a, b = divmod(j, 2)
            tile = image[:, 4 * a:4 * a + 4, 4 * b:4 * b + 4]
            matches = [i for i in range(len(images))
                       if torch.allclose(tile, small[i], atol=1e-6, rtol=0)]
            assert len(matches) == 1, (k, j)
            assert labels[matches[0]] == label
            used.append(matches[0])
            # decoded image k·4 + j is that real image downsampled then upsampled
            expected = F.interpolate(small[matches[0]:matches[0] + 1], size=(SIZE, SIZE),
                                     mode="bilinear", align_corners=False)[0]
            torch.testing.assert_close(decoded[4 * k + j], expected, atol=1e-6, rtol=0)
        assert len(set(used)) == 4  # four different real images


def test_decode_is_close_to_real_images_for_smooth_data():
    # For smooth real images the decoded training images are close to the originals.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    base = [0.5 + 0.3 * torch.sin(2 * torch.pi * (0.3 * xx + 0.2 * k * yy) + k) for k in range(8)]
    images = (torch.stack([torch.stack([b, b.flip(0), b.T]) for b in base]) * 255).round()
    images = images.to(torch.uint8)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    syn = SyntheticSet.from_real(images, labels, ipc=1, num_classes=2,
                                 generator=torch.Generator().manual_seed(0), factor=2)
    decoded, decoded_labels = syn.decode()
    reals = images.float() / 255
    nearest = []
    for d, label in zip(decoded, decoded_labels):
        errors = [float((d - r).abs().mean()) for r in reals]
        best = min(range(len(reals)), key=errors.__getitem__)
        assert errors[best] < 0.06  # close to one real image ...
        assert sorted(errors)[1] > 0.15  # ... and clearly not to the others
        assert labels[best] == label
        nearest.append(best)
    assert sorted(nearest) == list(range(8))  # every real image used once


def test_from_real_float_input_is_not_rescaled(real):
    images, labels = real
    floats = images.float() / 255
    syn = SyntheticSet.from_real(floats, labels, 1, NUM_CLASSES, torch.Generator().manual_seed(0))
    assert any(torch.equal(syn.images[0], f) for f in floats)


@pytest.mark.parametrize("ipc, factor", [(7, 1), (2, 2), (1, 3)])
def test_from_real_not_enough_images(real, ipc, factor):
    images, labels = real
    with pytest.raises(ValueError, match="needs"):
        SyntheticSet.from_real(images, labels, ipc, NUM_CLASSES, torch.Generator().manual_seed(0),
                               factor=factor)


def test_from_real_missing_class(real):
    images, labels = real
    with pytest.raises(ValueError):
        SyntheticSet.from_real(images, labels, 1, NUM_CLASSES + 1, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- #
# decode
# --------------------------------------------------------------------------- #
def test_decode_shapes_and_labels_factor_two():
    stored = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    syn = SyntheticSet(stored, labels, factor=2, image_size=16)
    images, out_labels = syn.decode()
    assert images.shape == (24, 3, 16, 16)
    assert out_labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    torch.testing.assert_close(images, decode_tiles(stored, 2, 16))
    # A differentiable copy decodes the same and passes gradient back.
    copy = stored.clone().requires_grad_(True)
    decoded, _ = syn.decode(copy)
    decoded.sum().backward()
    assert copy.grad is not None and torch.isfinite(copy.grad).all() and copy.grad.abs().sum() > 0
    cls1 = syn.decode_class(stored, 1)
    torch.testing.assert_close(cls1, images[8:16])


# --------------------------------------------------------------------------- #
# save / load
# --------------------------------------------------------------------------- #
def _sample_set(factor=1) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    return SyntheticSet(torch.rand(6, 3, 8, 8, generator=g), torch.tensor([0, 0, 1, 1, 2, 2]),
                        factor=factor, image_size=16 if factor > 1 else 8)


@pytest.mark.parametrize("factor", [1, 2])
def test_save_load_float32_is_exact(tmp_path, factor):
    syn = _sample_set(factor)
    path = tmp_path / "syn.pt"
    syn.save(path)
    back = SyntheticSet.load(path)
    assert torch.equal(back.images, syn.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, syn.labels) and back.labels.dtype == torch.int64
    assert back.factor == factor and back.image_size == syn.image_size


def test_save_load_uint8_within_one_step(tmp_path):
    syn = _sample_set()
    path = tmp_path / "syn_u8.pt"
    syn.save(path, dtype=torch.uint8)
    raw = torch.load(path, weights_only=True)
    assert raw["images"].dtype == torch.uint8
    back = SyntheticSet.load(path)
    assert back.images.dtype == torch.float32
    assert float((back.images - syn.images).abs().max()) <= 1 / 255
    assert torch.equal(back.labels, syn.labels)
    syn.save(tmp_path / "syn_f16.pt", dtype=torch.float16)
    half = SyntheticSet.load(tmp_path / "syn_f16.pt")
    torch.testing.assert_close(half.images, syn.images, atol=1e-3, rtol=0)


def test_load_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    state = _sample_set().state()
    state["images"] = Payload()
    torch.save(state, path)
    with pytest.raises(ValueError, match="evil.pt"):
        SyntheticSet.load(path)
    assert not marker.exists()  # weights_only: the object was never built


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-keys", "wrong-type"])
def test_corrupt_file_raises_value_error_with_path(tmp_path, damage):
    path = tmp_path / f"{damage}.pt"
    _sample_set().save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02not a torch file" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong-keys":
        torch.save({"something": torch.zeros(3)}, path)
    else:
        torch.save([torch.zeros(3)], path)  # loads, but is no dict
    with pytest.raises(ValueError) as info:
        SyntheticSet.load(path)
    assert str(path) in str(info.value)


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path, monkeypatch):
    folder = tmp_path / "out" / "nested"
    path = folder / "syn.pt"
    syn = _sample_set()
    syn.save(path)  # creates the folder
    assert sorted(os.listdir(folder)) == ["syn.pt"]
    syn.save(path, dtype=torch.uint8)  # overwrite
    assert sorted(os.listdir(folder)) == ["syn.pt"]
    before = path.read_bytes()

    # A save that fails part-way leaves the old file intact and no temporary behind.
    real_save = torch.save

    def failing_save(obj, stream, *args, **kwargs):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(synthetic.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _sample_set(2).save(path)
    monkeypatch.setattr(synthetic.torch, "save", real_save)
    assert sorted(os.listdir(folder)) == ["syn.pt"]
    assert path.read_bytes() == before
    assert SyntheticSet.load(path).factor == 1


def test_atomic_save_generic_object(tmp_path):
    path = Path(tmp_path) / "obj.pt"
    atomic_save({"a": torch.arange(3), "b": 2}, path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["a"], torch.arange(3)) and loaded["b"] == 2
    assert os.listdir(tmp_path) == ["obj.pt"]


# --------------------------------------------------------------------------- #
# constructor validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("images, labels", [
    (torch.rand(4, 8, 8), torch.zeros(4, dtype=torch.long)),          # 3-D images
    (torch.rand(4, 3, 8, 8, 1), torch.zeros(4, dtype=torch.long)),    # 5-D images
    (torch.rand(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)),       # too few labels
    (torch.rand(4, 3, 8, 8), torch.zeros(5, dtype=torch.long)),       # too many labels
])
def test_constructor_rejects_bad_shapes(images, labels):
    with pytest.raises(ValueError, match="N×C×H×W"):
        SyntheticSet(images, labels)


@pytest.mark.parametrize("factor", [0, -1])
def test_constructor_rejects_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        SyntheticSet(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), factor=factor)


def test_constructor_casts_and_defaults():
    syn = SyntheticSet(torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1], dtype=torch.int32))
    assert syn.images.dtype == torch.float32 and syn.labels.dtype == torch.int64
    assert syn.image_size == 8 and syn.factor == 1 and syn.ipc == 1


@pytest.mark.parametrize("factor", [1, 2])
def test_decode_classes_equals_decoding_each_class(real, factor):
    images, labels = real
    ipc = 2 if factor == 1 else 1  # the fixture has 6 images a class
    syn = SyntheticSet.from_real(images, labels, ipc=ipc, num_classes=NUM_CLASSES,
                                 generator=torch.Generator().manual_seed(2), factor=factor)
    order = torch.arange(len(syn)).view(NUM_CLASSES, ipc).t().flatten()  # classes interleaved
    shuffled = SyntheticSet(syn.images[order], syn.labels[order], factor, syn.image_size)
    for s in (syn, shuffled):  # contiguous classes, and classes the slice path cannot take
        parts = s.decode_classes(s.images, [2, 0])
        assert [len(p) for p in parts] == [ipc * factor ** 2] * 2
        for c, part in zip([2, 0], parts):
            assert torch.equal(part, s.decode_class(s.images, c))
        assert len(s.decode_classes(s.images, [NUM_CLASSES + 1])[0]) == 0  # no such class


def test_decode_classes_takes_every_tile_of_interleaved_classes():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    syn = SyntheticSet(images, torch.tensor([0, 1, 0, 1]), factor=2)
    zero, one = syn.decode_classes(images, [0, 1])
    assert torch.equal(zero, decode_tiles(images[[0, 2]], 2, 8))
    assert torch.equal(one, decode_tiles(images[[1, 3]], 2, 8))
