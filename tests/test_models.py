"""Tests for iemlib.models against manual computations with the models' own parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iemlib.models import (BasicBlockAP, ConvNet, HashHead, HashNet, Normalize, ResNetAP,
                           blank_copy, build_backbone, redraw)
from iemlib.seeding import generator, seeded

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps=1e-5):
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def _manual_convnet(net: ConvNet, x: torch.Tensor, mean, std) -> torch.Tensor:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    h = x.clone()
    for c in range(3):
        h[:, c] = (x[:, c] - mean[c]) / std[c]
    for conv, norm in zip(convs, norms):
        h = F.conv2d(h, conv.weight, conv.bias, padding=1)
        h = _instance_norm(h, norm.weight, norm.bias)
        h = torch.clamp(h, min=0)
        n, c, height, width = h.shape
        h = h.reshape(n, c, height // 2, 2, width // 2, 2).mean(dim=(3, 5))
    return h.reshape(len(h), -1)


# --------------------------------------------------------------------------- #
# ConvNet
# --------------------------------------------------------------------------- #
def test_convnet3_default_embedding_is_2048():
    torch.manual_seed(0)
    net = ConvNet()
    assert net.embed_dim == 128 * 4 * 4 == 2048
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 2048)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 3


@pytest.mark.parametrize("width, depth, size, expected", [
    (64, 2, 32, 64 * 8 * 8),
    (16, 1, 32, 16 * 16 * 16),
    (8, 4, 32, 8 * 2 * 2),
    (32, 3, 64, 32 * 8 * 8),
    (8, 3, 24, 8 * 3 * 3),
])
def test_convnet_width_depth_size(width, depth, size, expected):
    torch.manual_seed(0)
    net = ConvNet(width=width, depth=depth, image_size=size)
    assert net.embed_dim == expected
    assert net(torch.rand(2, 3, size, size)).shape == (2, expected)


def test_convnet_matches_manual_forward():
    torch.manual_seed(0)
    net = ConvNet(width=6, depth=2, image_size=16, mean=MEAN, std=STD)
    # Non-trivial affine parameters in the instance norms, so they must be used.
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(net(x), _manual_convnet(net, x, MEAN, STD), atol=1e-5, rtol=1e-4)


def test_convnet_instance_norm_is_per_image():
    # Instance norm: an image's embedding does not depend on the rest of the batch.
    torch.manual_seed(0)
    net = ConvNet(width=8, depth=2, image_size=16)
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(net(x)[1:2], net(x[1:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, depth", [(30, 3), (20, 3), (33, 1), (12, 3)])
def test_convnet_rejects_indivisible_size(size, depth):
    with pytest.raises(ValueError, match="divisible"):
        ConvNet(depth=depth, image_size=size)


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"width": 0}])
def test_convnet_rejects_bad_width_depth(kwargs):
    with pytest.raises(ValueError):
        ConvNet(**kwargs)


def test_convnet_channels():
    torch.manual_seed(0)
    net = ConvNet(channels=1, width=8, depth=2, image_size=8, mean=(0.5,), std=(0.25,))
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 8 * 2 * 2)


# --------------------------------------------------------------------------- #
# ResNetAP
# --------------------------------------------------------------------------- #
def _hand_param_count(stem_kernel: int, width: int = 64, channels: int = 3) -> int:
    """ResNetAP-10's parameters, counted by hand: convs have no bias, every IN has 2·C."""
    def inorm(c):
        return 2 * c
    total = stem_kernel ** 2 * channels * width + inorm(width)             # stem
    total += 2 * (9 * width * width + inorm(width))                        # stage 1, no shortcut
    for c_in, c_out in ((width, 2 * width), (2 * width, 4 * width), (4 * width, 8 * width)):
        total += 9 * c_in * c_out + inorm(c_out) + 9 * c_out * c_out + inorm(c_out)  # main path
        total += c_in * c_out + inorm(c_out)                               # 1x1 shortcut + IN
    return total


def test_resnetap10_hand_parameter_count():
    # 7x7 stem at 224 px: 9,536 + 73,984 + 230,144 + 919,040 + 3,673,088.
    assert _hand_param_count(7) == 4_905_792
    assert sum(p.numel() for p in ResNetAP(image_size=224).parameters()) == _hand_param_count(7)
    # 3x3 stem at 32 px (and 64, 128).
    assert sum(p.numel() for p in ResNetAP(image_size=32).parameters()) == _hand_param_count(3)
    small = ResNetAP(channels=1, width=8, image_size=32, mean=(0.5,), std=(0.5,))
    assert sum(p.numel() for p in small.parameters()) == _hand_param_count(3, width=8, channels=1)


def _block_inputs_and_output(net: ResNetAP, x: torch.Tensor):
    """(channels, side) of the input to each residual block and to the global pooling."""
    shapes = []
    hooks = [m.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape[1::2])))
             for m in net.modules() if isinstance(m, (BasicBlockAP, torch.nn.AdaptiveAvgPool2d))]
    out = net(x)
    for hook in hooks:
        hook.remove()
    return shapes, out


@pytest.mark.parametrize("size, after_stem, stem_kernel, stem_pool", [
    (224, 56, 7, 4),   # ImageNet: 7x7 stride-1 stem, then 4x4 average pooling
    (128, 64, 3, 2),   # 65-128 px: 3x3 stem, then 2x2 average pooling
    (64, 64, 3, None),  # up to 64 px: 3x3 stem, no pooling
    (32, 32, 3, None),
])
def test_resnetap10_shapes_and_stem(size, after_stem, stem_kernel, stem_pool):
    torch.manual_seed(0)
    net = ResNetAP(image_size=size)
    assert net.embed_dim == 512
    shapes, out = _block_inputs_and_output(net, torch.rand(2, 3, size, size))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    s = after_stem
    assert shapes == [(64, s), (64, s), (128, s // 2), (256, s // 4), (512, s // 8)]
    stem_conv = net.features[1]
    assert isinstance(stem_conv, torch.nn.Conv2d) and stem_conv.kernel_size == (stem_kernel,) * 2
    pools = [m for m in net.features[:5] if isinstance(m, torch.nn.AvgPool2d)]
    assert [p.kernel_size for p in pools] == ([stem_pool] if stem_pool else [])


@pytest.mark.parametrize("size", [32, 224])
def test_resnetap_downsamples_only_by_average_pooling(size):
    net = ResNetAP(image_size=size)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * 4 + 3  # stem, two a block, three 1x1 shortcuts
    assert all(c.stride == (1, 1) and c.bias is None for c in convs)
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.BatchNorm2d)) for m in net.modules())
    pools = [m for m in net.modules() if isinstance(m, torch.nn.AvgPool2d)]
    # stages 2-4 pool in the main path and in the shortcut; the 224-px stem pools once more
    assert len(pools) == 6 + (size == 224)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(n.num_groups == n.num_channels for n in norms)  # instance norm
    assert len(norms) == 1 + 2 * 4 + 3


def _manual_block(h, block, stride):
    conv1, norm1, _, _, conv2, norm2 = block.residual
    out = _instance_norm(F.conv2d(h, conv1.weight, padding=1), norm1.weight, norm1.bias)
    out = torch.clamp(out, min=0)
    if stride > 1:
        n, c, height, width = out.shape
        out = out.reshape(n, c, height // 2, 2, width // 2, 2).mean(dim=(3, 5))
    out = _instance_norm(F.conv2d(out, conv2.weight, padding=1), norm2.weight, norm2.bias)
    if isinstance(block.shortcut, torch.nn.Identity):
        short = h
    else:
        conv, _, norm = block.shortcut
        short = F.conv2d(h, conv.weight)
        n, c, height, width = short.shape
        short = short.reshape(n, c, height // 2, 2, width // 2, 2).mean(dim=(3, 5))
        short = _instance_norm(short, norm.weight, norm.bias)
    return torch.clamp(out + short, min=0)


def test_resnetap_matches_manual_forward():
    torch.manual_seed(0)
    net = ResNetAP(width=4, blocks=(1, 1, 1), image_size=16, mean=MEAN, std=STD)
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.rand(3, 3, 16, 16)
    h = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    stem, stem_norm = net.features[1], net.features[2]
    h = torch.clamp(_instance_norm(F.conv2d(h, stem.weight, padding=1), stem_norm.weight,
                                   stem_norm.bias), min=0)
    blocks = list(net.features[4:7])
    for block, stride in zip(blocks, (1, 2, 2)):
        h = _manual_block(h, block, stride)
    expected = h.mean(dim=(2, 3))
    assert expected.shape == (3, 16) and net.embed_dim == 16
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-4)


def test_resnetap_instance_norm_is_per_image_and_init_is_he_fan_out():
    torch.manual_seed(0)
    net = ResNetAP(width=8, image_size=32)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(net(x)[2:3], net(x[2:3]), atol=1e-5, rtol=1e-5)
    conv = ResNetAP(image_size=32).features[-3].residual[4]  # last stage: 3x3, 512 -> 512
    assert abs(conv.weight.std().item() / math.sqrt(2 / (9 * 512)) - 1) < 0.02


@pytest.mark.parametrize("size", [30, 36, 100, 120, 200, 240, 0])
def test_resnetap_rejects_sizes_it_cannot_halve(size):
    # <= 64 px: divisible by 8; 65-128 px: by 16 (stem pool 2); above: by 32 (stem pool 4).
    with pytest.raises(ValueError, match=f"image size {size} is not divisible"):
        ResNetAP(image_size=size)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"blocks": ()}, {"blocks": (1, 0, 1, 1)}])
def test_resnetap_rejects_bad_width_blocks(kwargs):
    with pytest.raises(ValueError, match="ResNetAP needs"):
        ResNetAP(image_size=32, **kwargs)


# --------------------------------------------------------------------------- #
# Normalize
# --------------------------------------------------------------------------- #
def test_normalize_matches_formula():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 5, 7)
    out = Normalize(MEAN, STD)(x)
    for n in range(4):
        for c in range(3):
            expected = (x[n, c] - MEAN[c]) / STD[c]
            torch.testing.assert_close(out[n, c], expected, atol=1e-6, rtol=1e-6)
    assert out.shape == x.shape


def test_normalize_has_buffers_not_parameters():
    norm = Normalize(MEAN, STD)
    assert set(norm.state_dict()) == {"mean", "std"}
    assert not list(norm.parameters())


# --------------------------------------------------------------------------- #
# hash head and hash net
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_hashnet_codes_in_open_interval(bits):
    torch.manual_seed(0)
    net = HashNet(ConvNet(width=16, depth=3, image_size=32), bits)
    codes = net(torch.rand(5, 3, 32, 32))
    assert codes.shape == (5, bits)
    assert net.bits == bits
    assert torch.isfinite(codes).all()
    assert (codes > -1).all() and (codes < 1).all()


@torch.no_grad()
def test_hash_head_linear_has_no_bias_and_layer_norm_then_tanh():
    torch.manual_seed(0)
    head = HashHead(20, 12)
    assert head.linear.bias is None
    assert head.linear.weight.shape == (12, 20)
    head.norm.weight.data.uniform_(0.5, 2.0)
    head.norm.bias.data.uniform_(-0.5, 0.5)
    z = torch.randn(6, 20) * 3
    y = z @ head.linear.weight.T
    mu = y.mean(dim=1, keepdim=True)
    var = ((y - mu) ** 2).mean(dim=1, keepdim=True)
    expected = torch.tanh((y - mu) / torch.sqrt(var + 1e-5) * head.norm.weight + head.norm.bias)
    torch.testing.assert_close(head(z), expected, atol=1e-6, rtol=1e-5)
    # Elementwise for one entry, in plain Python.
    row = y[0].tolist()
    m = sum(row) / len(row)
    v = sum((a - m) ** 2 for a in row) / len(row)
    first = math.tanh((row[0] - m) / math.sqrt(v + 1e-5) * float(head.norm.weight[0])
                      + float(head.norm.bias[0]))
    assert abs(float(head(z)[0, 0]) - first) < 1e-5


def test_hashnet_is_head_after_backbone():
    torch.manual_seed(0)
    backbone = ConvNet(width=8, depth=2, image_size=16)
    net = HashNet(backbone, 8)
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(net(x), net.head(backbone(x)))
    assert net.head.linear.in_features == backbone.embed_dim


@pytest.mark.parametrize("bits", [0, -1])
def test_bits_must_be_positive(bits):
    with pytest.raises(ValueError, match="bits"):
        HashHead(16, bits)
    with pytest.raises(ValueError, match="bits"):
        HashNet(ConvNet(width=4, depth=1, image_size=8), bits)


# --------------------------------------------------------------------------- #
# build_backbone
# --------------------------------------------------------------------------- #
def test_build_backbone_convnet():
    net = build_backbone("convnet", channels=3, image_size=32, mean=MEAN, std=STD)
    assert isinstance(net, ConvNet) and net.embed_dim == 2048
    norm = net.features[0]
    assert isinstance(norm, Normalize)
    torch.testing.assert_close(norm.mean.flatten(), torch.tensor(MEAN))
    torch.testing.assert_close(norm.std.flatten(), torch.tensor(STD))


def test_build_backbone_resnetap():
    net = build_backbone("resnetap", channels=3, image_size=64, mean=MEAN, std=STD)
    assert isinstance(net, ResNetAP) and net.embed_dim == 512
    norm = net.features[0]
    assert isinstance(norm, Normalize)  # takes [0, 1] images and normalises them itself
    torch.testing.assert_close(norm.mean.flatten(), torch.tensor(MEAN))
    torch.testing.assert_close(norm.std.flatten(), torch.tensor(STD))
    assert HashNet(net, 16)(torch.rand(2, 3, 64, 64)).shape == (2, 16)


@pytest.mark.parametrize("name", ["resnet18", "ConvNet", "ResNetAP", ""])
def test_build_backbone_unknown_name(name):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(name, channels=3, image_size=32, mean=MEAN, std=STD)


@pytest.mark.parametrize("name,size", [("convnet", 32), ("convnet", 64), ("resnetap", 32),
                                       ("resnetap", 224)])
def test_a_redrawn_blank_copy_is_the_backbone_built_under_the_same_seed(name, size):
    """The global generator's draws of the constructor (ResNetAP's He-normal after torch's own
    initialisation) come again from an explicit generator, tensor for tensor."""
    def build():
        return build_backbone(name, channels=3, image_size=size, mean=MEAN, std=STD)

    template = build()
    with seeded(7, "net"):
        built = build()
    before = torch.get_rng_state()
    redrawn = redraw(blank_copy(template), generator(7, "net"))
    assert torch.equal(torch.get_rng_state(), before)  # no global draw
    assert redrawn.state_dict().keys() == built.state_dict().keys()
    for key, value in built.state_dict().items():
        assert torch.equal(redrawn.state_dict()[key], value), key
    assert not torch.equal(redraw(blank_copy(template), generator(8, "net")).state_dict()[
        "features.1.weight"], built.state_dict()["features.1.weight"])


def test_a_blank_copy_shares_nothing_it_could_change_with_its_original():
    net = ConvNet(mean=MEAN, std=STD)
    net.features[1].weight.requires_grad_(False)
    net.eval()
    blank = blank_copy(net)
    pairs = list(zip(net.state_dict().values(), blank.state_dict().values()))
    assert all(a.shape == b.shape and a.data_ptr() != b.data_ptr() for a, b in pairs)
    assert torch.equal(blank.features[0].mean, net.features[0].mean)  # buffers copied
    assert [p.requires_grad for p in blank.parameters()] == [p.requires_grad
                                                             for p in net.parameters()]
    assert not blank.training and isinstance(blank.features[1].weight, torch.nn.Parameter)
    handle = blank.features[1].register_forward_hook(lambda *args: None)
    assert not net.features[1]._forward_hooks  # hooks of its own
    handle.remove()
    blank.features.add_module("extra", torch.nn.Identity())
    assert "extra" not in net.features._modules


def test_redraw_refuses_a_module_whose_start_it_does_not_know():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Embedding(5, 2))
    with pytest.raises(TypeError, match="Embedding"):
        redraw(net, generator(0))
