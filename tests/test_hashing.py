"""DHD loss terms against hand computations, and the trainer on a separable toy problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iemlib.hashing import HashingSettings, encode, train_hashing
from iemlib.hashing.dhd import DHDLoss, gaussian_bce_quantization, proxy_cross_entropy
from iemlib.retrieval import mean_average_precision


def test_proxy_cross_entropy_matches_a_hand_computation():
    codes = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    proxies = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    # cosines: query 0 -> (1, 0), query 1 -> (0, -1); logits = cos / 0.5
    expected = 0.5 * (-math.log(math.exp(2) / (math.exp(2) + 1))
                      - math.log(math.exp(-2) / (1 + math.exp(-2))))
    assert proxy_cross_entropy(codes, proxies, labels, 0.5).item() == pytest.approx(expected, rel=1e-6)
    multi_hot = F.one_hot(labels, 2)
    torch.testing.assert_close(proxy_cross_entropy(codes, proxies, multi_hot, 0.5),
                               proxy_cross_entropy(codes, proxies, labels, 0.5))


def test_quantization_prefers_binary_codes():
    saturated = torch.tensor([[0.99, -0.99, 0.98]])
    undecided = torch.tensor([[0.05, -0.02, 0.1]])
    assert gaussian_bce_quantization(saturated, 0.5) < gaussian_bce_quantization(undecided, 0.5)
    # at exactly ±1 the membership of the right sign is 1: only the clamp's tiny loss remains
    assert gaussian_bce_quantization(torch.tensor([[1.0, -1.0]]), 0.5).item() < 1e-3


def test_dhd_loss_is_differentiable_and_weights_its_terms():
    loss = DHDLoss(8, 3, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert (loss.temperature, loss.distill, loss.quantization, loss.sigma) == (0.2, 0.1, 0.1, 0.5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 8), torch.nn.Tanh())
    value = loss(model, torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]),
                 torch.Generator().manual_seed(0))
    value.backward()
    assert torch.isfinite(value) and loss.proxies.grad.abs().sum() > 0


def test_unknown_hashing_method_is_rejected():
    with pytest.raises(ValueError, match="unknown hashing method"):
        train_hashing(torch.rand(4, 3, 32, 32), torch.arange(4) % 2, bits=8, num_classes=2,
                      mean=(0.5,) * 3, std=(0.5,) * 3, settings=HashingSettings(loss="nope"),
                      seed=0, progress=False)


def toy_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 is dark, class 1 bright, class 2 red: told apart at a glance."""
    labels = torch.arange(n) % 3
    base = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8], [0.9, 0.1, 0.1]])[labels]
    noise = 0.05 * torch.randn(n, 3, 16, 16, generator=generator)
    return (base.view(n, 3, 1, 1) + noise).clamp(0, 1), labels


def test_trainer_learns_codes_that_retrieve_the_right_class():
    generator = torch.Generator().manual_seed(0)
    images, labels = toy_images(30, generator)
    queries, query_labels = toy_images(12, generator)
    settings = HashingSettings(steps=15, batch_size=30, lr=3e-3)
    net, losses = train_hashing(images, labels, bits=16, num_classes=3, mean=(0.5,) * 3,
                                std=(0.5,) * 3, settings=settings, seed=0, progress=False)
    assert len(losses) == 15 and losses[-1] < losses[0]
    codes = encode(net, queries)
    db_codes = encode(net, images)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0} and codes.shape == (12, 16)
    assert mean_average_precision(codes, db_codes, query_labels, labels) > 0.9


def test_trainer_is_deterministic_for_a_seed():
    images, labels = toy_images(12, torch.Generator().manual_seed(1))
    settings = HashingSettings(steps=3, batch_size=6)
    kwargs = dict(bits=8, num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3, settings=settings,
                  progress=False)
    a, _ = train_hashing(images, labels, seed=3, **kwargs)
    b, _ = train_hashing(images, labels, seed=3, **kwargs)
    assert torch.equal(encode(a, images), encode(b, images))
