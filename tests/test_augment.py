"""Tests for iemlib.augment: DSA groups against exact references, siamese draws, tiling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iemlib.augment import DSA, GROUPS, PARAMETERS, STRONG, WEAK, DSAParams, decode_tiles, encode_tiles

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _images(n=2, h=16, w=20, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _mean(x):
    return torch.tensor(MEAN, dtype=x.dtype).view(1, -1, 1, 1)


def _std(x):
    return torch.tensor(STD, dtype=x.dtype).view(1, -1, 1, 1)


def _params(group: str, n: int, seed: int = 0) -> DSAParams:
    return DSA(group, MEAN, STD).sample(n, torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- #
# siamese draws and determinism
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("group", GROUPS)
def test_siamese_sample_gives_every_image_the_same_values(group):
    dsa = DSA(group, MEAN, STD)
    params = dsa.sample(5, torch.Generator().manual_seed(1), siamese=True)
    assert params.group == group
    for value in params.values.values():
        assert len(value) == 5
        assert all(torch.equal(value[i], value[0]) for i in range(5))
    # Non-siamese draws differ between images.
    params = dsa.sample(5, torch.Generator().manual_seed(1))
    for value in params.values.values():
        assert not all(torch.equal(value[i], value[0]) for i in range(5))


@pytest.mark.parametrize("group", GROUPS)
def test_same_params_on_identical_batches_give_identical_outputs(group):
    dsa = DSA(group, MEAN, STD)
    x = _images(4)
    params = dsa.sample(4, torch.Generator().manual_seed(2), siamese=True)
    a, b = dsa(x, params), dsa(x.clone(), params)
    assert torch.equal(a, b)
    # Siamese: four copies of one image come out as four copies of one output.
    same = x[:1].expand(4, -1, -1, -1).contiguous()
    out = dsa(same, params)
    for i in range(1, 4):
        torch.testing.assert_close(out[i], out[0], atol=1e-6, rtol=0)
    # ... and a siamese draw on a batch acts as on each image alone.
    for i in range(4):
        torch.testing.assert_close(a[i:i + 1], dsa(x[i:i + 1], params.expand(1)), atol=1e-5, rtol=0)


def test_same_seed_same_augmentation():
    dsa = DSA(STRONG, MEAN, STD)
    x = _images(3)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        outs.append([dsa.augment(x, g) for _ in range(8)])
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    # Another seed gives a different sequence.
    g = torch.Generator().manual_seed(8)
    other = [dsa.augment(x, g) for _ in range(8)]
    assert any(not torch.equal(a, b) for a, b in zip(outs[0], other))


def test_strong_strategy_draws_every_group():
    dsa = DSA(STRONG, MEAN, STD)
    g = torch.Generator().manual_seed(0)
    seen = {dsa.sample(2, g).group for _ in range(200)}
    assert seen == set(GROUPS)
    assert {DSA(WEAK).sample(1, g).group for _ in range(50)} == {"crop", "flip"}


@pytest.mark.parametrize("strategy", ["blur", "crop_blur", "", "_"])
def test_unknown_strategy_raises(strategy):
    with pytest.raises(ValueError):
        DSA(strategy)


# --------------------------------------------------------------------------- #
# differentiability
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("group", GROUPS)
def test_each_group_is_differentiable(group):
    dsa = DSA(group, MEAN, STD)
    x = _images(3).requires_grad_(True)
    params = _params(group, 3, seed=4)
    weights = torch.randn(3, 3, 16, 20, generator=torch.Generator().manual_seed(5))
    (dsa(x, params) * weights).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for i in range(3):  # every image receives gradient
        assert x.grad[i].abs().sum() > 0


@pytest.mark.parametrize("group", ["color", "scale", "rotate", "crop"])
def test_gradcheck(group):
    dsa = DSA(group, MEAN, STD)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    params = _params(group, 2, seed=3)
    assert torch.autograd.gradcheck(lambda t: dsa(t, params), (x,), eps=1e-6, atol=1e-5)


# --------------------------------------------------------------------------- #
# groups against exact references
# --------------------------------------------------------------------------- #
def test_flip_below_half_mirrors_and_above_is_identity():
    dsa = DSA("flip", MEAN, STD)
    x = _images(3)
    params = DSAParams("flip", {"flip": torch.tensor([[0.3], [0.7], [0.49]])})
    out = dsa(x, params)
    torch.testing.assert_close(out[0], x[0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-6, rtol=0)  # mean/std round trip
    torch.testing.assert_close(out[2], x[2].flip(-1), atol=1e-6, rtol=0)


def _shift_reference(z: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out[y, x] = z[y + dy, x + dx], zero outside (torch.roll plus zero fill)."""
    out = torch.roll(z, shifts=(-dy, -dx), dims=(-2, -1))
    h, w = z.shape[-2:]
    if dy > 0:
        out[..., h - dy:, :] = 0
    elif dy < 0:
        out[..., :-dy, :] = 0
    if dx > 0:
        out[..., :, w - dx:] = 0
    elif dx < 0:
        out[..., :, :-dx] = 0
    return out


@pytest.mark.parametrize("sx, sy", [(0.9, 0.25), (0.0, 0.99), (0.5, 0.5), (0.13, 0.71), (0.999, 0.0)])
def test_crop_is_an_integer_shift_with_zero_fill(sx, sy):
    dsa = DSA("crop", MEAN, STD)
    h, w = 16, 20
    x = _images(1, h, w)
    # As the code does: shift = round((2u - 1) · ratio · size), size = (W, H).
    dx = round((2 * sx - 1) * dsa.crop * w)
    dy = round((2 * sy - 1) * dsa.crop * h)
    assert abs(dx) <= 3 and abs(dy) <= 2
    out = dsa(x, DSAParams("crop", {"shift": torch.tensor([[sx, sy]])}))
    z = (x - _mean(x)) / _std(x)
    expected = _shift_reference(z, dx, dy) * _std(x) + _mean(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_crop_known_shift_on_a_marker_image():
    dsa = DSA("crop", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x = torch.zeros(1, 3, 16, 16)
    x[0, :, 5, 7] = 1.0  # one bright pixel at row 5, column 7
    # u = 0.75 -> (2u - 1) · 0.125 · 16 = +1 pixel in x; u = 0.0 -> -2 pixels in y
    out = dsa(x, DSAParams("crop", {"shift": torch.tensor([[0.75, 0.0]])}))
    peak = torch.nonzero(out[0, 0] > 0.5).tolist()
    assert peak == [[5 + 2, 7 - 1]]


def test_cutout_sets_a_square_to_the_mean_colour():
    dsa = DSA("cutout", MEAN, STD)
    size = 32
    x = _images(1, size, size, seed=3)
    out = dsa(x, DSAParams("cutout", {"center": torch.tensor([[0.5, 0.5]])}))
    side = round(0.5 * size)  # 16
    changed = (out - x).abs() > 1e-6
    assert int(changed.sum()) == 3 * side * side
    # centre 0.5 -> start int(0.5 · 33) - 8 = 8: rows and columns 8..23
    hole = torch.zeros(size, size, dtype=torch.bool)
    hole[8:24, 8:24] = True
    assert torch.equal(changed[0, 0], hole)
    filled = out[0][:, hole]
    torch.testing.assert_close(filled, torch.tensor(MEAN).view(3, 1).expand_as(filled), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0][:, ~hole], x[0][:, ~hole], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cx, cy", [(0.3, 0.6), (0.41, 0.55), (0.7, 0.29)])
def test_cutout_hole_inside_image_has_full_size(cx, cy):
    dsa = DSA("cutout", MEAN, STD)
    for size in (32, 24):
        x = _images(2, size, size, seed=5)
        out = dsa(x, DSAParams("cutout", {"center": torch.tensor([[cx, cy], [cy, cx]])}))
        side = round(0.5 * size)
        for i in range(2):
            changed = ((out[i] - x[i]).abs() > 1e-6).all(dim=0)
            assert int(changed.sum()) == side * side
            rows, cols = torch.nonzero(changed, as_tuple=True)
            assert int(rows.max() - rows.min()) + 1 == side
            assert int(cols.max() - cols.min()) + 1 == side


def test_cutout_at_the_border_is_clipped():
    dsa = DSA("cutout", MEAN, STD)
    x = _images(1, 32, 32)
    out = dsa(x, DSAParams("cutout", {"center": torch.tensor([[0.0, 0.0]])}))
    changed = ((out - x).abs() > 1e-6).all(dim=1)[0]
    assert int(changed.sum()) == 8 * 8 and bool(changed[:8, :8].all())


@pytest.mark.parametrize("group, values", [
    ("color", {"brightness": [[0.5]], "saturation": [[0.5]], "contrast": [[0.5]]}),
    ("scale", {"scale": [[(1 - 1 / 1.2) / (1.2 - 1 / 1.2)] * 2]}),
    ("rotate", {"angle": [[0.5]]}),
    ("crop", {"shift": [[0.5, 0.5]]}),
    ("flip", {"flip": [[0.9]]}),
])
def test_identity_draws_return_the_input(group, values):
    dsa = DSA(group, MEAN, STD)
    x = _images(1)
    params = DSAParams(group, {k: torch.tensor(v) for k, v in values.items()})
    torch.testing.assert_close(dsa(x, params), x, atol=1e-5 if group != "flip" else 1e-6, rtol=0)


def test_color_matches_reference_formula():
    dsa = DSA("color", MEAN, STD)
    x = _images(2)
    b, s, c = torch.tensor([[0.2], [0.9]]), torch.tensor([[0.3], [0.8]]), torch.tensor([[0.1], [0.6]])
    out = dsa(x, DSAParams("color", {"brightness": b, "saturation": s, "contrast": c}))
    for i in range(2):
        z = (x[i] - _mean(x)[0]) / _std(x)[0]
        z = z + (float(b[i]) - 0.5) * 1.0
        gray = z.mean(dim=0, keepdim=True)
        z = (z - gray) * (float(s[i]) * 2.0) + gray
        z = (z - z.mean()) * (float(c[i]) + 0.5) + z.mean()
        torch.testing.assert_close(out[i], z * _std(x)[0] + _mean(x)[0], atol=1e-5, rtol=1e-5)


def test_rotate_by_180_reverses_both_axes():
    # With rotate=180 degrees, u = 1 rotates by +180: the image is reversed in both axes.
    dsa = DSA("rotate", MEAN, STD, rotate=180.0)
    x = _images(1, 8, 8)
    out = dsa(x, DSAParams("rotate", {"angle": torch.tensor([[1.0]])}))
    torch.testing.assert_close(out, x.flip(-1).flip(-2), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- #
# multi-formation tiles
# --------------------------------------------------------------------------- #
def test_decode_tiles_row_major_against_slicing():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    tiles = decode_tiles(x, 2)
    assert tiles.shape == (4, 1, 4, 4)
    same_size = decode_tiles(x, 2, size=2)
    for a in range(2):
        for b in range(2):
            piece = x[:, :, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
            assert torch.equal(same_size[a * 2 + b], piece[0])
            up = F.interpolate(piece, size=(4, 4), mode="bilinear", align_corners=False)
            torch.testing.assert_close(tiles[a * 2 + b], up[0])
    # Tile 0 is the top-left 2x2 block [[0, 1], [4, 5]]; its upsampling keeps the corners.
    assert same_size[0, 0].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert same_size[1, 0].tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert same_size[2, 0].tolist() == [[8.0, 9.0], [12.0, 13.0]]
    assert tiles[3, 0, 0, 0] == 10.0 and tiles[3, 0, -1, -1] == 15.0


def test_tile_layout_is_the_exact_inverse():
    f = 3
    n = 2
    # Image k of the input is the constant k: encode puts it at tile (k mod f²) of image k // f².
    images = torch.arange(n * f * f, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 12, 12)
    encoded = encode_tiles(images.contiguous(), f)
    assert encoded.shape == (n, 2, 12, 12)
    for i in range(n):
        for j in range(f * f):
            a, b = divmod(j, f)
            block = encoded[i, :, 4 * a:4 * a + 4, 4 * b:4 * b + 4]
            torch.testing.assert_close(block, torch.full_like(block, i * f * f + j), atol=1e-5, rtol=0)
    decoded = decode_tiles(encoded, f)
    assert decoded.shape == images.shape
    torch.testing.assert_close(decoded, images, atol=1e-5, rtol=0)  # tile i·f²+j comes from position j of image i


def test_encode_decode_round_trip_for_smooth_images():
    h = w = 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    smooth = torch.stack([0.5 + 0.4 * torch.sin(2 * torch.pi * (k + 1) * 0.3 * xx + yy) *
                          torch.cos(2 * torch.pi * 0.4 * yy) for k in range(3)])
    x = smooth.unsqueeze(0)
    round_trip = encode_tiles(decode_tiles(x, 2), 2)
    assert round_trip.shape == x.shape
    torch.testing.assert_close(round_trip, x, atol=0.03, rtol=0)
    # A rough image does not survive as well (the check above is not vacuous).
    rough = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    assert (encode_tiles(decode_tiles(rough, 2), 2) - rough).abs().max() > 0.1


def test_factor_one_is_identity():
    x = torch.rand(3, 3, 7, 9)
    assert torch.equal(decode_tiles(x, 1), x)
    assert torch.equal(encode_tiles(x, 1), x)


def test_decode_size_argument():
    x = torch.rand(2, 3, 8, 8)
    assert decode_tiles(x, 2, size=16).shape == (8, 3, 16, 16)
    assert decode_tiles(x, 4).shape == (32, 3, 8, 8)


def test_non_divisible_sizes_raise():
    with pytest.raises(ValueError, match="divisible"):
        decode_tiles(torch.rand(1, 3, 5, 4), 2)
    with pytest.raises(ValueError, match="divisible"):
        decode_tiles(torch.rand(1, 3, 6, 6), 4)
    with pytest.raises(ValueError):
        encode_tiles(torch.rand(3, 3, 4, 4), 2)  # 3 images are not a group of 4
    with pytest.raises(ValueError, match="divisible"):
        encode_tiles(torch.rand(4, 3, 5, 6), 2)


def test_apply_each_equals_one_call_a_batch_bit_for_bit():
    dsa = DSA()
    g = torch.Generator().manual_seed(3)
    batches = [torch.rand(n, 3, 16, 16, generator=g) for n in (5, 1, 7, 4, 6, 2, 3, 8)]
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    assert len({d.group for d in draws}) < len(draws)  # some groups hold several batches
    expected = [dsa(b, d.expand(len(b))) for b, d in zip(batches, draws)]
    for got, want in zip(dsa.apply_each(batches, draws), expected):
        assert torch.equal(got, want)


def test_apply_each_carries_gradients_to_every_batch():
    dsa = DSA()
    g = torch.Generator().manual_seed(4)
    batches = [torch.rand(3, 3, 16, 16, generator=g, requires_grad=True) for _ in range(4)]
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    sum(out.sum() for out in dsa.apply_each(batches, draws)).backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in batches)


def test_apply_mixed_equals_one_call_a_group_in_values_and_gradients():
    dsa = DSA()
    g = torch.Generator().manual_seed(5)
    batches = [torch.rand(n, 3, 16, 16, generator=g) for n in (3, 1, 4, 2, 5, 3, 2, 4, 1, 2)]
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    assert len({d.group for d in draws}) >= 4
    rows = torch.repeat_interleave(torch.arange(len(batches)), torch.tensor([len(b) for b in batches]))
    x = torch.cat(batches).requires_grad_(True)
    mixed = dsa.apply_mixed(x, dsa.table(draws)[rows])
    y = torch.cat(batches).requires_grad_(True)
    each = torch.cat(dsa.apply_each(list(y.split([len(b) for b in batches])), draws))
    assert torch.equal(mixed, each)
    weights = torch.rand(mixed.shape, generator=g)
    (mixed * weights).sum().backward()
    (each * weights).sum().backward()
    assert torch.equal(x.grad, y.grad)


def test_table_lays_out_each_draw_in_its_group_columns_and_zeros_elsewhere():
    dsa = DSA(WEAK)
    g = torch.Generator().manual_seed(0)
    draws = [dsa.sample(1, g, siamese=True) for _ in range(6)]
    table = dsa.table(draws)
    assert dsa.columns() == {"shift": (1, (2,)), "flip": (3, ())} and table.shape == (6, 4)
    assert {d.group for d in draws} == {"crop", "flip"}
    for row, draw in zip(table, draws):
        assert row[0] == dsa.groups.index(draw.group)
        shift, flip = row[1:3], row[3]
        if draw.group == "crop":
            assert torch.equal(shift, draw.values["shift"][0]) and flip == 0
        else:
            assert flip == draw.values["flip"][0] and not shift.any()
