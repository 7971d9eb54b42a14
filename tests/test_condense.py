"""Condensation: registry, perturbation, matching loss, and resumable runs."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from iemlib.condense import METHODS, CondenseSettings, CondenseTask, Interrupted, condense
from iemlib.condense import gradient_matching, networks
from iemlib.condense.base import GPU_DRAW_AHEAD
from iemlib.condense.engine import run_means
from iemlib.condense.iem import perturb, perturbation
from iemlib.models import ConvNet


def make_task(protocol, **kwargs) -> CondenseTask:
    return CondenseTask(protocol.train, protocol.num_classes, protocol.mean, protocol.std,
                        seed=0, progress=False, **kwargs)


SMALL = CondenseSettings(ipc=2, iterations=6, real_batch=8, checkpoint_every=2, early_steps=2,
                         pool_size=2)


def test_registry_has_the_three_methods_and_rejects_unknown(tiny_protocol):
    assert {"random", "dm", "iem"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown condensation method"):
        condense("nope", make_task(tiny_protocol), SMALL)


def test_random_returns_real_images_of_each_class(tiny_protocol):
    result = condense("random", make_task(tiny_protocol), SMALL)
    synthetic = result.synthetic
    assert synthetic.labels.tolist() == sorted([c for c in range(10) for _ in range(2)])
    real = tiny_protocol.train.images.float() / 255
    for image, label in zip(synthetic.images, synthetic.labels):
        matches = (real - image).abs().flatten(1).amax(1) < 1e-6
        assert matches.any() and (tiny_protocol.train.labels[matches] == label).all()


@pytest.mark.parametrize("mode", ["filter", "layer", "element"])
def test_perturbation_is_scaled_to_the_weights(mode):
    weight = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    d = perturbation(weight, mode, torch.Generator().manual_seed(0))
    if mode == "filter":
        torch.testing.assert_close(d.flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1))
    elif mode == "layer":
        torch.testing.assert_close(d.norm(), weight.norm())
    else:
        assert torch.all(d.abs() <= weight.abs() * 10) and torch.all((weight == 0) <= (d == 0))
    assert not perturbation(torch.randn(6), mode, torch.Generator()).any()  # biases untouched


def test_perturb_copies_and_moves_weights_by_alpha():
    net = ConvNet(width=8)
    moved = perturb(net, 0.1, "filter", torch.Generator().manual_seed(1))
    conv, conv_moved = net.features[1].weight, moved.features[1].weight
    ratio = (conv_moved - conv).flatten(1).norm(dim=1) / conv.flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.1))
    assert not any(p.requires_grad for p in moved.parameters())
    biases = {n: p.clone() for n, p in net.named_parameters() if p.ndim < 2}
    same = perturb(net, 0.1, "filter", torch.Generator().manual_seed(1), in_place=True)
    assert same is net and torch.equal(net.features[1].weight, conv_moved)  # the same draws
    assert all(torch.equal(p, biases[n]) for n, p in net.named_parameters() if p.ndim < 2)
    assert all(torch.equal(a, b) for a, b in zip(perturb(net, 0.1, "none", torch.Generator())
                                                 .parameters(), net.parameters()))
    with pytest.raises(ValueError, match="perturbation mode"):
        perturbation(conv, "sideways", torch.Generator())


def test_run_means_against_a_loop():
    x = torch.randn(7, 4)
    means = run_means(x, [3, 4])
    torch.testing.assert_close(means, torch.stack([x[:3].mean(0), x[3:].mean(0)]))


@pytest.mark.parametrize("method,settings", [
    ("dm", SMALL),
    ("iem", replace(SMALL, factor=2, network="fixed", perturb="filter", alpha=0.05)),
])
def test_matching_reduces_the_loss(tiny_protocol, method, settings):
    result = condense(method, make_task(tiny_protocol), replace(settings, iterations=12))
    first, last = sum(result.history[:3]), sum(result.history[-3:])
    assert last < first
    assert result.synthetic.images.min() >= 0 and result.synthetic.images.max() <= 1


@pytest.mark.parametrize("method,settings", [
    ("dm", SMALL),
    ("iem", replace(SMALL, factor=2, network="early", perturb="filter", alpha=0.05)),
])
def test_resume_reaches_the_uninterrupted_result(tiny_protocol, tmp_path, method, settings):
    straight = condense(method, make_task(tiny_protocol), settings)
    checkpoint = tmp_path / "run.ckpt.pt"
    with pytest.raises(Interrupted):  # draws made ahead (as on a GPU) change nothing
        condense(method, make_task(tiny_protocol, checkpoint=checkpoint, stop_after=3,
                                   draw_ahead=2), settings)
    assert checkpoint.exists()
    resumed = condense(method, make_task(tiny_protocol, checkpoint=checkpoint, resume=True,
                                         draw_ahead=1), settings)
    assert resumed.info["resumed_from"] == 2  # the last checkpoint before the "kill"
    assert 0 < resumed.info["seconds_before_resume"] < resumed.seconds  # time before the kill counts
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert resumed.history == straight.history
    # the snapshots taken before the kill come back from the checkpoint
    assert resumed.snapshots.iterations == straight.snapshots.iterations == [0, 2, 4, 6]
    for a, b in zip(resumed.snapshots.images, straight.snapshots.images):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method,settings", [
    ("dm", SMALL),
    ("iem", replace(SMALL, factor=2, perturb="filter", alpha=0.05)),
    ("iem", replace(SMALL, network="pool", perturb="layer", alpha=0.1)),
])
def test_draws_made_ahead_on_worker_threads_are_the_draws_made_in_turn(tiny_protocol, monkeypatch,
                                                                       method, settings):
    """An iteration's host draws (network, real batches, transforms) made on worker threads
    while the loop runs, as on a GPU, give the run that drawing each in its turn gives."""
    from iemlib.condense import dm

    threads: list[str] = []
    draw = dm.class_draws
    monkeypatch.setattr(dm, "class_draws", lambda *args: threads.append(
        threading.current_thread().name) or draw(*args))
    ahead = condense(method, make_task(tiny_protocol, draw_ahead=2), settings)
    assert {"MainThread"} < set(threads) and len(threads) == settings.iterations
    threads.clear()
    in_turn = condense(method, make_task(tiny_protocol), settings)  # the CPU's default
    assert set(threads) == {"MainThread"}
    assert torch.equal(ahead.synthetic.images, in_turn.synthetic.images)
    assert ahead.history == in_turn.history


def test_draws_are_made_ahead_by_default_only_on_a_gpu(tiny_protocol):
    assert make_task(tiny_protocol).draws_ahead == 0
    assert make_task(tiny_protocol, device="cuda").draws_ahead == GPU_DRAW_AHEAD > 0
    assert make_task(tiny_protocol, device="cuda", draw_ahead=0).draws_ahead == 0


@pytest.mark.parametrize("method,module,settings", [
    ("idc", gradient_matching, replace(SMALL, iterations=3, outer_loop=3, inner_loop=2)),
    ("iem", networks, replace(SMALL, iterations=1, network="early")),
])
def test_networks_train_on_the_training_set_where_the_task_keeps_it(tiny_protocol, monkeypatch,
                                                                    method, module, settings):
    """IDC's network between image steps and IEM's early networks train on real batches: they
    gather them from the task's copy on its device (on a GPU, no host gather, conversion and
    copy a step)."""
    task, trained_on = make_task(tiny_protocol), []
    task.device_images = task.train.images.clone()  # the device's copy (on the CPU, the set)
    fit = module.fit
    monkeypatch.setattr(module, "fit", lambda model, images, *args, **kwargs:
                        trained_on.append(images) or fit(model, images, *args, **kwargs))
    condense(method, task, settings)
    assert trained_on and all(images is task.device_images for images in trained_on)


def test_resume_refuses_another_configuration_and_corrupt_files(tiny_protocol, tmp_path):
    checkpoint = tmp_path / "run.ckpt.pt"
    condense("dm", make_task(tiny_protocol, checkpoint=checkpoint), SMALL)
    with pytest.raises(ValueError, match="another configuration"):
        condense("dm", make_task(tiny_protocol, checkpoint=checkpoint, resume=True),
                 replace(SMALL, lr=0.5))
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        condense("dm", make_task(tiny_protocol, checkpoint=checkpoint, resume=True), SMALL)


def test_same_seed_same_synthetic_set(tiny_protocol):
    settings = replace(SMALL, iterations=3)
    a = condense("iem", make_task(tiny_protocol), replace(settings, perturb="layer", alpha=0.1))
    b = condense("iem", make_task(tiny_protocol), replace(settings, perturb="layer", alpha=0.1))
    assert torch.equal(a.synthetic.images, b.synthetic.images)


def test_the_fused_compiled_matching_loss_follows_the_eager_one(tiny_protocol):
    """DM's loss and image gradient on real CIFAR-10 images (multi-formation) with DSA inside the
    compiled forward (the CUDA path, forced here on the CPU): as compiling alone gives them, and
    close to eager. The gradient, a difference of class means, is ill-conditioned: fp32 eager is
    itself 4e-4 from a float64 run here, compiled 5e-4."""
    from iemlib.augment import DSA
    from iemlib.condense.dm import matching_loss
    from iemlib.condense.engine import Embedder
    from iemlib.condense.networks import random_network

    task, settings = make_task(tiny_protocol), replace(SMALL, factor=2)
    synthetic, members = task.initial_set(settings.ipc, settings.factor), task.class_indices()
    dsa, net = DSA(mean=task.mean, std=task.std), random_network(task, settings, "fused")
    runs = []
    for compile_mode, fused in (("off", False), ("default", False), ("default", True)):
        embedder = Embedder("cpu", compile_mode=compile_mode, one_forward=True,
                            fused_augment=fused)
        images = synthetic.images.clone().requires_grad_(True)
        loss = matching_loss(task, settings, synthetic, members, dsa, net, images,
                             torch.Generator().manual_seed(1), embedder=embedder)
        loss.backward()
        runs.append((loss.detach(), images.grad))
    (loss, grad), (compiled_loss, compiled_grad), (fused_loss, fused_grad) = runs
    torch.testing.assert_close(fused_loss, compiled_loss, rtol=1e-6, atol=0)
    assert (fused_grad - compiled_grad).norm() / compiled_grad.norm() < 1e-5
    torch.testing.assert_close(fused_loss, loss, rtol=1e-4, atol=0)
    assert grad.norm() > 0 and (fused_grad - grad).norm() / grad.norm() < 2e-3
