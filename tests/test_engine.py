"""The real branch's engine: batching gives the same numbers, bf16 stays close, a compiled
forward equals the eager one and serves fresh networks without recompiling."""

from __future__ import annotations

import pytest
import torch

from iemlib.augment import DSA
from iemlib.condense import engine
from iemlib.condense.engine import Embedder, validate
from iemlib.experiment import Config
from iemlib.models import ConvNet, build_backbone


def _net(seed: int, width: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = ConvNet(width=width).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(12, 3, 32, 32, generator=g) for _ in range(3)]


def test_class_by_class_equals_one_forward_and_the_plain_means(batches):
    net = _net(0)
    expected = torch.stack([net(b).mean(dim=0) for b in batches])
    by_class = Embedder("cpu").real_means(net, iter(batches))  # a generator works too
    one = Embedder("cpu", one_forward=True).real_means(net, batches)
    assert torch.equal(by_class, expected) and torch.equal(one, expected)


def test_chunked_cpu_forwards_give_the_same_means(batches, monkeypatch):
    net = _net(0)
    expected = torch.stack([net(b).mean(dim=0) for b in batches])
    monkeypatch.setattr(engine, "CPU_CHUNK", 5)  # 12-image batches: chunks of 5, 5 and 2
    assert torch.equal(Embedder("cpu").real_means(net, batches), expected)


def test_largest_activation_is_the_first_convolution_output():
    # ConvNet-3: conv1's width x 32 x 32; ResNetAP-10 at 224 px: the stem's 64 x 224 x 224
    net = _net(0, width=16)
    assert engine.largest_activation(net, (3, 32, 32)) == 4 * 16 * 32 * 32
    resnet = build_backbone("resnetap", channels=3, image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert engine.largest_activation(resnet, (3, 224, 224)) == 4 * 64 * 224 * 224
    assert engine.largest_activation(net, (1, 16, 16)) == 4 * 16 * 16 * 16  # a shape of its own
    assert all(not m._forward_hooks for m in [*net.modules(), *resnet.modules()])  # none left


def test_one_forward_past_its_memory_budget_goes_a_piece_at_a_time(batches, monkeypatch):
    """On one forward (the GPU), real batches whose largest activation passes
    ``DEVICE_FORWARD_BYTES`` go through in pieces of a class at most: the same means."""
    net = _net(0)
    expected = torch.stack([net(b).mean(dim=0) for b in batches])
    forwards: list[int] = []
    net.register_forward_hook(lambda m, i, out: forwards.append(len(out)))
    embedder = Embedder("cpu", one_forward=True)
    assert torch.equal(embedder.real_means(net, batches), expected) and forwards == [36]
    per_image = engine.largest_activation(net, (3, 32, 32))
    monkeypatch.setattr(engine, "DEVICE_FORWARD_BYTES", 5 * per_image + per_image // 2)
    forwards.clear()
    assert torch.equal(embedder.real_means(net, batches), expected)
    assert forwards == [5, 5, 2] * 3  # 12-image batches, 5 images a forward


def test_bf16_is_close_but_not_equal(batches):
    net = _net(0)
    fp32 = Embedder("cpu").real_means(net, batches)
    bf16 = Embedder("cpu", "bf16").real_means(net, batches)
    error = float((bf16 - fp32).norm() / fp32.norm())
    assert bf16.dtype == torch.float32 and 0 < error < 1e-2


def test_a_compiled_forward_carries_the_image_gradient(batches):
    """The synthetic branch goes through the compiled forward too, with its backward."""
    net, grads = _net(7), []
    for compile_mode in ("off", "default"):
        x = batches[0].clone().requires_grad_(True)
        Embedder("cpu", compile_mode=compile_mode).forward(net, x).square().sum().backward()
        grads.append(x.grad)
    assert grads[0].norm() > 0 and (grads[1] - grads[0]).norm() / grads[0].norm() < 1e-5


def test_a_compiled_forward_serves_fresh_networks_and_runs_without_recompiling(batches):
    for seed in range(4):  # a fresh network each time, a new run (Embedder) from the third on
        embedder = embedder if seed in (1, 2) else Embedder("cpu", compile_mode="default")
        net = _net(seed)
        with torch._dynamo.config.patch(error_on_recompile=seed > 0):
            means = embedder.real_means(net, batches)
        torch.testing.assert_close(means, Embedder("cpu").real_means(net, batches),
                                   rtol=1e-4, atol=1e-5)


def test_a_compiled_forward_takes_a_frozen_network_as_plain_inputs(batches):
    """Dynamo takes an nn.Parameter input for a static one (a CUDA graph keeps its address and
    would record again for every fresh network): a frozen network's tensors go in detached."""
    net = _net(0, width=5)  # a structure no other test compiles: traced here
    Embedder("cpu", compile_mode="default").real_means(net, batches)
    assert not any(hasattr(p, "_dynamo_static_input_type") for p in net.parameters())


@pytest.mark.parametrize("one_forward", [False, True])
def test_a_compiled_forward_augments_as_the_eager_one(batches, one_forward):
    """Fused (the CUDA default when compiled), DSA runs inside the compiled forward
    (``apply_mixed``): the means and the image gradient equal the eager run's (one DSA call a
    group); bf16 casts the network and stays close."""
    dsa, g, net = DSA(), torch.Generator().manual_seed(3), _net(5)
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    assert len({d.group for d in draws}) == len(draws)  # three groups
    runs = []
    for compile_mode in ("off", "default"):
        embedder = Embedder("cpu", compile_mode=compile_mode, one_forward=one_forward,
                            fused_augment=True)
        assert embedder.fused_augment == (compile_mode != "off")
        fake = [b.clone().requires_grad_(True) for b in batches]
        means = embedder.class_means(net, fake, (dsa, draws))
        means.square().sum().backward()
        runs.append((embedder.real_means(net, batches, (dsa, draws)), means.detach(),
                     torch.cat([f.grad for f in fake])))
    (real, fake, grad), (real_c, fake_c, grad_c) = runs
    assert torch.equal(real, fake)  # the same means with and without a gradient
    torch.testing.assert_close(real_c, real, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fake_c, fake, rtol=1e-4, atol=1e-5)
    assert grad.norm() > 0 and (grad_c - grad).norm() / grad.norm() < 1e-4
    bf16 = Embedder("cpu", "bf16", "default", one_forward=one_forward,
                    fused_augment=True).real_means(net, batches, (dsa, draws))
    assert 0 < float((bf16 - real).norm() / real.norm()) < 1e-2


def test_siamese_means_share_one_dsa_call_a_group_and_give_each_branch_alone(batches):
    dsa, g, net = DSA(), torch.Generator().manual_seed(4), _net(6)
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    fake = [b[:4].flip(0) for b in batches]
    embedder = Embedder("cpu")
    real_means, fake_means = embedder.siamese_means(net, batches, fake, (dsa, draws))
    assert torch.equal(real_means, embedder.real_means(net, batches, (dsa, draws)))
    assert torch.equal(fake_means, embedder.class_means(net, fake, (dsa, draws)))
    assert not torch.equal(real_means, embedder.real_means(net, batches))  # augmented
    loss = embedder.matching_loss(net, batches, fake, (dsa, draws))
    assert torch.equal(loss, ((real_means - fake_means) ** 2).sum())


def _fused_matching(net, batches, draws, dsa, monkeypatch):
    """The fused matching loss and its image gradient, and the compiled calls it made:
    (branch specs, loss or forward) each."""
    embedder = Embedder("cpu", compile_mode="default", one_forward=True, fused_augment=True)
    calls = []
    compiled_function = engine.compiled_function
    monkeypatch.setattr(engine, "compiled_function", lambda *args, loss=False: calls.append(
        (args[-1], loss)) or compiled_function(*args, loss=loss))
    real = torch.cat(batches).split([len(b) for b in batches])
    fake = [b[:4].flip(0).clone().requires_grad_(True) for b in batches]
    loss = embedder.matching_loss(net, real, fake, (dsa, draws))
    loss.backward()
    monkeypatch.undo()
    return loss.detach(), torch.cat([f.grad for f in fake]), calls


def test_the_fused_matching_loss_is_one_compiled_call_with_its_gradient(batches, monkeypatch):
    """On one forward (the GPU) with DSA fused, one compiled call computes the loss and its
    gradient: equal to the branches run one by one, and the gradient flows back to the images."""
    dsa, g, net = DSA(), torch.Generator().manual_seed(5), _net(8)
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    loss, grad, calls = _fused_matching(net, batches, draws, dsa, monkeypatch)
    assert calls == [(((None, (12, 12, 12)), (None, (4, 4, 4))), True)]  # both branches, loss
    embedder = Embedder("cpu", compile_mode="default", one_forward=True, fused_augment=True)
    fake = [b[:4].flip(0).clone().requires_grad_(True) for b in batches]
    real_means = embedder.real_means(net, batches, (dsa, draws))
    apart = ((real_means - embedder.class_means(net, fake, (dsa, draws))) ** 2).sum()
    apart.backward()
    torch.testing.assert_close(loss, apart.detach(), rtol=1e-5, atol=1e-6)
    assert grad.norm() > 0
    torch.testing.assert_close(grad, torch.cat([f.grad for f in fake]), rtol=1e-4, atol=1e-6)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a fresh network: no recompile
        again, _, _ = _fused_matching(_net(9), batches, draws, dsa, monkeypatch)
    assert not torch.equal(again, loss)


def test_the_fused_matching_loss_past_the_memory_budget_runs_the_branches_apart(batches,
                                                                               monkeypatch):
    """A real branch too big for one forward leaves the one compiled call: the real pieces and
    the synthetic branch are compiled calls of their own, with the same loss and gradient."""
    dsa, g, net = DSA(), torch.Generator().manual_seed(5), _net(8)
    draws = [dsa.sample(1, g, siamese=True) for _ in batches]
    one, one_grad, _ = _fused_matching(net, batches, draws, dsa, monkeypatch)
    monkeypatch.setattr(engine, "DEVICE_FORWARD_BYTES",
                        12 * engine.largest_activation(net, (3, 32, 32)))
    apart, apart_grad, calls = _fused_matching(net, batches, draws, dsa, monkeypatch)
    real_call, fake_call = (((None, None),), False), (((None, (4, 4, 4)),), False)
    assert calls == [real_call] * 3 + [fake_call]  # a class a call, then the synthetic branch
    torch.testing.assert_close(apart, one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(apart_grad, one_grad, rtol=1e-4, atol=1e-6)


def test_joined_batches_are_the_tensor_they_were_split_from():
    x = torch.rand(10, 3, 4, 4)
    assert engine.joined(x.split([3, 7])) is x
    for batches in (x[:5].split([2, 3]), [x[5:], x[:5]], list(x[::2].split(2)),
                    [torch.rand(2, 3, 4, 4), torch.rand(3, 3, 4, 4)]):
        joined = engine.joined(batches)  # a part, out of order, strided, separate: a copy
        assert torch.equal(joined, torch.cat(batches)) and joined.data_ptr() != x.data_ptr()


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        validate("fp16", "off")
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        Embedder("cpu", compile_mode="fast")
    with pytest.raises(ValueError, match="dsa has no such forward"):
        Config(method="dsa", precision="bf16").resolved()
    with pytest.raises(ValueError, match="unknown precision"):
        Config(method="iem", precision="half").resolved()


def test_profiles_pick_the_real_branch_settings():
    assert Config(method="iem", profile="paper").resolved().precision == "bf16"
    assert Config(method="dm", profile="cpu").resolved().precision is None  # fp32: keys unchanged
    assert Config(method="dsa", profile="paper").resolved().precision is None
    settings = Config(method="iem", profile="cpu", precision="bf16").resolved().condense_settings()
    assert settings.precision == "bf16" and settings.compile_mode == "off"


def test_build_backbone_nets_work_too(batches):
    net = build_backbone("resnetap", channels=3, image_size=32, mean=(0.5,) * 3,
                         std=(0.5,) * 3).eval()
    means = Embedder("cpu").real_means(net, batches[:1])
    assert means.shape == (1, net(batches[0][:1]).shape[1])
