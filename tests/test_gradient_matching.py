"""Gradient matching (DSA, IDC): the distance, the class gradients, the loop, resuming, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iemlib.condense import PINNED, CondenseSettings, CondenseTask, Interrupted, condense
from iemlib.condense import dsa, idc
from iemlib.condense.base import optimise_images
from iemlib.condense.gradient_matching import (Matching, augmenter, class_gradient,
                                               cutmix_cross_entropy, gradient_distance,
                                               layer_distance, matched_parameters,
                                               matching_loss, siamese, siamese_draws)
from iemlib.data import Split
from iemlib.experiment import Config
from iemlib.models import Classifier, ConvNet
from iemlib.seeding import generator


@pytest.fixture(scope="module")
def small_task(tiny_protocol) -> CondenseTask:
    """3 classes of the tiny CIFAR-10 slice at 16 px: a fast stand-in for the real task."""
    train = tiny_protocol.train
    keep = train.labels < 3
    images = F.interpolate(train.images[keep].float(), size=(16, 16), mode="bilinear",
                           antialias=True, align_corners=False).round().clamp(0, 255)
    split = Split(images.to(torch.uint8), train.labels[keep], train.indices[keep])
    return CondenseTask(split, 3, tiny_protocol.mean, tiny_protocol.std, seed=0, progress=False)


SMALL = CondenseSettings(ipc=2, iterations=6, real_batch=6, outer_loop=3, inner_loop=2,
                         checkpoint_every=2, lr=0.1)


# --- the layer-wise distance ---------------------------------------------------------------

def test_identical_gradients_are_at_distance_zero():
    g = torch.randn(5, 3, 3, 3)
    assert layer_distance(g, g.clone(), "cos").item() == pytest.approx(0.0, abs=1e-5)
    assert layer_distance(g, g.clone(), "mse").item() == 0.0


def test_opposite_gradients_are_at_the_largest_cos_distance():
    g = torch.randn(5, 3, 3, 3)
    assert layer_distance(g, -g, "cos").item() == pytest.approx(2.0 * 5, rel=1e-5)  # 2 a channel


def test_cos_distance_is_taken_per_output_channel():
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(2, 1, 1, 2)  # two output channels
    syn = torch.tensor([[1.0, 1.0], [3.0, 0.0]]).view(2, 1, 1, 2)
    expected = (1 - 1 / math.sqrt(2)) + (1 - 0.0)  # channel 0: 45°, channel 1: orthogonal
    assert layer_distance(real, syn, "cos").item() == pytest.approx(expected, rel=1e-5)
    whole = 1 - (real * syn).sum() / (real.norm() * syn.norm())  # not one cosine of everything
    assert layer_distance(real, syn, "cos").item() != pytest.approx(whole.item(), abs=0.1)
    assert layer_distance(real, syn, "mse").item() == pytest.approx(0 + 1 + 9 + 4)


def test_gradient_distance_sums_the_layers():
    real = [torch.randn(4, 2, 3, 3), torch.randn(3, 8)]
    syn = [torch.randn(4, 2, 3, 3), torch.randn(3, 8)]
    total = layer_distance(real[0], syn[0], "cos") + layer_distance(real[1], syn[1], "cos")
    torch.testing.assert_close(gradient_distance(real, syn, "cos"), total)


def test_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown gradient distance 'l3'"):
        layer_distance(torch.ones(2, 2), torch.ones(2, 2), "l3")
    with pytest.raises(ValueError, match="shapes differ"):
        layer_distance(torch.ones(2, 2), torch.ones(2, 3), "mse")
    with pytest.raises(ValueError, match="output channels"):
        layer_distance(torch.ones(4), torch.ones(4), "cos")
    with pytest.raises(ValueError, match="same positive number"):
        gradient_distance([torch.ones(2, 2)], [], "cos")


def test_matched_parameters_follow_the_references():
    net = Classifier(ConvNet(width=8, image_size=16), 3)
    weights = matched_parameters(net, 2)  # DC/DSA: conv filters and the linear weight
    shapes = [tuple(p.shape) for p in weights]
    assert shapes == [(8, 3, 3, 3), (8, 8, 3, 3), (8, 8, 3, 3), (3, 32)]
    assert [p.ndim for p in matched_parameters(net, 4)] == [4, 4, 4]  # IDC: conv filters only
    with pytest.raises(ValueError, match="no parameter"):
        matched_parameters(nn.Linear(3, 2), 4)


# --- augmentation --------------------------------------------------------------------------

def test_siamese_transforms_give_both_batches_the_same_draw(small_task):
    transforms = augmenter(("color", "crop", "cutout"), small_task)  # IDC: all three, in turn
    x = torch.rand(4, 3, 16, 16)
    draws = siamese_draws(transforms, generator(3))
    real, syn = siamese(transforms, x, x[:2].clone(), draws)
    torch.testing.assert_close(real[:2], syn)
    mean = torch.tensor(small_task.mean).view(1, -1, 1, 1)
    blank = (real == mean).all(dim=1)  # cutout (and crop padding) leave the mean colour
    assert blank.flatten(1).sum(dim=1).min() >= 16  # at least a corner of the 8×8 cutout
    assert all(torch.equal(blank[0], b) for b in blank)  # in the same place in every image


def test_cutmix_mixes_the_labels_by_the_pasted_area():
    x = torch.rand(2, 3, 8, 8) + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)  # two distinct images
    y = torch.tensor([0, 1])
    seen = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 2))
    model = lambda images: seen.append(images) or net(images)  # noqa: E731
    for seed in range(50):
        seen.clear()
        loss = cutmix_cross_entropy(model, x, y, generator(seed))
        pasted = (seen[0] != x).any(dim=1)  # pixels that came from the other image
        if pasted.any():
            break
    kept = 1 - pasted[0].float().mean()
    assert torch.equal(pasted[0], pasted[1])  # one box, swapped between the two images
    logits = net(seen[0])
    expected = kept * F.cross_entropy(logits, y) + (1 - kept) * F.cross_entropy(logits, y.flip(0))
    torch.testing.assert_close(loss, expected)


# --- the class gradient ------------------------------------------------------------------

def test_class_gradient_equals_the_closed_form_of_softmax_regression():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x, label = torch.randn(5, 3, 2, 2), 2
    g_weight, g_bias = class_gradient(net, list(net.parameters()), x, label)
    p = torch.softmax(net(x), dim=1).detach()
    residual = p - F.one_hot(torch.full((5,), label), 4).float()  # ∂CE/∂logits, one row an image
    torch.testing.assert_close(g_weight, residual.T @ x.flatten(1) / 5)
    torch.testing.assert_close(g_bias, residual.mean(dim=0))
    assert not g_weight.requires_grad
    assert class_gradient(net, list(net.parameters()), x, label, create_graph=True)[0].requires_grad


def test_matching_steps_reduce_the_loss_on_a_fixed_network(small_task):
    net = Classifier(ConvNet(width=16, image_size=16, mean=small_task.mean, std=small_task.std), 3)
    synthetic = small_task.initial_set(2)
    matching = Matching(metric="cos", min_ndim=2, augment=("flip",))
    augment = augmenter(matching.augment, small_task)
    members = small_task.class_indices()
    settings = replace(SMALL, iterations=8, lr=0.5, checkpoint_every=100)

    def loss_fn(images, iteration, _):  # the same real batch and transform every step
        return matching_loss(small_task, settings, synthetic, members, matching, augment, net,
                             images, generator(0))

    history, _ = optimise_images("test", small_task, settings, synthetic, loss_fn)
    assert history[-1] < 0.9 * history[0]
    assert synthetic.images.min() >= 0 and synthetic.images.max() <= 1


# --- the methods end to end ----------------------------------------------------------------

def test_dsa_and_idc_on_the_tiny_protocol(tiny_protocol):
    task = CondenseTask(tiny_protocol.train, 10, tiny_protocol.mean, tiny_protocol.std,
                        seed=0, progress=False)
    settings = CondenseSettings(ipc=1, iterations=2, real_batch=4, outer_loop=2, inner_loop=1)
    plain = condense("dsa", task, settings).synthetic
    assert plain.images.shape == (10, 3, 32, 32) and plain.factor == 1
    assert plain.labels.tolist() == list(range(10))
    tiled = condense("idc", task, replace(settings, factor=2)).synthetic
    assert tiled.images.shape == (10, 3, 32, 32) and tiled.factor == 2
    images, labels = tiled.decode()
    assert images.shape == (40, 3, 32, 32)
    assert labels.tolist() == [c for c in range(10) for _ in range(4)]
    for synthetic in (plain, tiled):
        assert synthetic.images.min() >= 0 and synthetic.images.max() <= 1


@pytest.mark.parametrize("method,factor", [("dsa", 1), ("idc", 2)])
def test_same_seed_same_set_and_the_images_move(small_task, method, factor):
    settings = replace(SMALL, iterations=3, factor=factor)
    a = condense(method, small_task, settings)
    b = condense(method, small_task, settings)
    assert torch.equal(a.synthetic.images, b.synthetic.images) and a.history == b.history
    assert len(a.history) == 3 and a.info["networks"] == 1
    start = small_task.initial_set(2, factor).images
    assert not torch.equal(a.synthetic.images, start)
    other = condense(method, replace(small_task, seed=1), settings)
    assert not torch.equal(other.synthetic.images, a.synthetic.images)


@pytest.mark.parametrize("method,factor", [("dsa", 1), ("idc", 2)])
def test_resume_reaches_the_uninterrupted_result(small_task, tmp_path, method, factor):
    settings = replace(SMALL, factor=factor)  # networks at steps 0-2 and 3-5; trained at 1, 2, 4, 5
    straight = condense(method, small_task, settings)
    checkpoint = tmp_path / "run.ckpt.pt"
    with pytest.raises(Interrupted):
        condense(method, replace(small_task, checkpoint=checkpoint, stop_after=3), settings)
    resumed = condense(method, replace(small_task, checkpoint=checkpoint, resume=True), settings)
    assert resumed.info["resumed_from"] == 2  # mid-network: its trained state came back
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert resumed.history == straight.history
    assert resumed.snapshots.iterations == straight.snapshots.iterations
    assert all(torch.equal(a, b) for a, b in zip(resumed.snapshots.images,
                                                 straight.snapshots.images))


@pytest.mark.parametrize("change,message", [
    (dict(outer_loop=0), "outer_loop must be >= 1, got 0"),
    (dict(inner_loop=-2), "inner_loop must be >= 0, got -2"),
    (dict(real_batch=0), "real_batch must be >= 1, got 0"),
    (dict(outer_loop=None), "outer_loop must be >= 1, got None"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        replace(SMALL, **change)


@pytest.mark.parametrize("change,message", [
    (dict(inner_loop=0), "inner_loop must be >= 1, got 0"),
    (dict(iterations=0), "iterations must be >= 1, got 0"),
])
def test_gradient_matching_refuses_what_only_it_cannot_run(small_task, change, message):
    with pytest.raises(ValueError, match=message):
        condense("idc", small_task, replace(SMALL, **change))


def test_dsa_refuses_multi_formation(small_task):
    with pytest.raises(ValueError, match="factor must be 1, got 2"):
        condense("dsa", small_task, replace(SMALL, factor=2))


# --- configuration -------------------------------------------------------------------------

def test_reference_loops_by_ipc():
    assert [dsa.reference_settings(i)["outer_loop"] for i in (1, 10, 50)] == [1, 10, 50]
    # ipc 50: 10 epochs of 500 synthetic images = 10 × 2 batches of 256
    assert [dsa.reference_settings(i)["inner_loop"] for i in (1, 10, 50)] == [1, 50, 20]
    assert dsa.reference_settings(10)["iterations"] == 10 * 1000
    assert dsa.reference_settings(2)["outer_loop"] == 1  # an unlisted ipc: the listed one below
    assert idc.reference_settings(10) == {"iterations": 200000, "outer_loop": 100, "inner_loop": 32,
                                          "real_batch": 64, "lr": 0.08}


def test_config_fills_the_loops_only_for_gradient_matching():
    paper = Config(method="dsa", profile="paper", ipc=10).resolved()
    assert (paper.outer_loop, paper.inner_loop, paper.lr, paper.factor) == (10, 50, 0.1, 1)
    assert Config(method="idc", profile="paper", ipc=10).resolved().real_batch == 64
    cpu = Config(method="idc", profile="cpu", ipc=10).resolved()
    assert cpu.factor == 2 and cpu.iterations == 100 and cpu.network is None
    assert Config(method="dsa", profile="cpu", outer_loop=3).resolved().outer_loop == 3
    for method in ("dm", "iem", "random"):
        other = Config(method=method, profile="cpu").resolved()
        assert other.outer_loop is None and other.inner_loop is None and other.lr == 1.0
    assert set(PINNED) >= {"dsa", "idc"}


@pytest.mark.parametrize("method", ["dsa", "idc"])
def test_smoke_cli_run(tmp_path, data_root, method):
    out = tmp_path / f"{method}.json"
    args = ["--method", method, "--ipc", "2", "--bits", "16", "--profile", "smoke",
            "--train-steps", "3", "--quiet", "--out", str(out)]
    env = {**os.environ, "IEMLIB_DATA": str(data_root)}
    done = subprocess.run([sys.executable, "-m", "iemlib", "run", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["config"]["method"] == method and record["config"]["outer_loop"] == 2
    assert len(record["history"]["condense_loss"]) == record["config"]["iterations"]
    assert record["synthetic"]["decoded"] == (20 if method == "dsa" else 80)
