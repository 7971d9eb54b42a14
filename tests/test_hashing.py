"""DHD, DPN and OrthoHash losses against hand computations, and the trainer on a separable toy
problem with each of them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iemlib.hashing import LOSSES, HashingSettings, encode, train_hashing
from iemlib.hashing.codebook import random_codebook
from iemlib.hashing.dhd import DHDLoss, gaussian_bce_quantization, proxy_cross_entropy
from iemlib.hashing.dpn import DPNLoss, polarization_loss
from iemlib.hashing.orthohash import OrthoHashLoss, margin_cosine_cross_entropy
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


MEAN_STD = dict(mean=(0.5,) * 3, std=(0.5,) * 3)


def test_polarization_loss_matches_a_hand_computation():
    codes = torch.tensor([[0.5, -0.2], [-1.5, 0.3]])
    targets = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    # image 0: max(0, 1 - 0.5) + max(0, 1 + 0.2) = 1.7; image 1: max(0, 1 - 1.5) + 0.7 = 0.7
    assert polarization_loss(codes, targets, 1.0).item() == pytest.approx(1.2)
    assert polarization_loss(codes, targets, 0.0).item() == pytest.approx(0.2 / 2)


def test_dpn_loss_uses_the_code_of_each_label():
    loss = DPNLoss(2, 2, **MEAN_STD)
    loss.codebook = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    codes = torch.tensor([[-1.5, 0.3], [0.5, -0.2]])
    assert loss.margin == 1.0
    assert loss.code_loss(codes, torch.tensor([1, 0])).item() == pytest.approx(1.2)
    assert loss.code_loss(codes, torch.tensor([0, 1])).item() == pytest.approx((3.2 + 2.7) / 2)


def test_margin_cosine_cross_entropy_matches_a_hand_computation():
    codebook = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    codes = torch.tensor([[3.0, 0.0], [0.0, -0.5]])
    labels = torch.tensor([0, 1])
    # image 0: cosines (1/√2, 1/√2), the true class loses the margin: CE = log(1 + e^{s·m})
    # image 1: cosines (-1/√2, 1/√2): CE = log(1 + e^{s·(-√2 + m)})
    s, m = 8.0, 0.2
    expected = (math.log(1 + math.exp(s * m)) + math.log(1 + math.exp(s * (m - math.sqrt(2))))) / 2
    value = margin_cosine_cross_entropy(codes, codebook, labels, s, m)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    loss = OrthoHashLoss(2, 2, **MEAN_STD)
    loss.codebook = codebook
    assert (loss.scale, loss.margin) == (8.0, 0.2)
    assert loss.code_loss(codes, labels).item() == pytest.approx(expected, rel=1e-6)


def test_random_codebook_is_signs_with_distinct_rows_and_seeded():
    codes = random_codebook(10, 4, torch.Generator().manual_seed(0))
    assert codes.shape == (10, 4) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len(torch.unique(codes, dim=0)) == 10
    # 4 classes in 2 bits: every draw must be a permutation of the four codes
    assert len(torch.unique(random_codebook(4, 2, torch.Generator().manual_seed(1)), dim=0)) == 4
    again = random_codebook(10, 4, torch.Generator().manual_seed(0))
    assert torch.equal(codes, again)
    with pytest.raises(ValueError, match="only 4 distinct codes"):
        random_codebook(5, 2)


@pytest.mark.parametrize("name", ["dpn", "orthohash"])
def test_codebook_losses_keep_fixed_codes_and_pass_gradients(name):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loss = LOSSES[name](16, 3, **MEAN_STD)
        torch.manual_seed(0)
        same = LOSSES[name](16, 3, **MEAN_STD)
    assert torch.equal(loss.codebook, same.codebook)  # a seeded construction fixes the codes
    assert set(loss.codebook.unique().tolist()) == {-1.0, 1.0} and loss.codebook.shape == (3, 16)
    assert list(loss.parameters()) == [] and "codebook" in dict(loss.named_buffers())
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.Tanh())
    before = loss.codebook.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        value = loss(model, torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]),
                     torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        value.backward()
        assert torch.isfinite(value) and model[1].weight.grad.abs().sum() > 0
        optimizer.step()
    assert torch.equal(loss.codebook, before)


@pytest.mark.parametrize("name", ["dpn", "orthohash"])
@pytest.mark.parametrize("codes,labels,message", [
    (torch.zeros(2, 5), torch.tensor([0, 1]), "codes must be N × 4"),
    (torch.zeros(2, 4), torch.tensor([0, 3]), r"labels must lie in \[0, 3\)"),
    (torch.zeros(2, 4), torch.tensor([0, -1]), r"labels must lie in \[0, 3\)"),
    (torch.zeros(2, 4), torch.tensor([0.0, 1.0]), "class indices"),
    (torch.zeros(2, 4), torch.tensor([0, 1, 2]), "class indices"),
])
def test_codebook_losses_reject_bad_input(name, codes, labels, message):
    with pytest.raises(ValueError, match=message):
        LOSSES[name](4, 3, **MEAN_STD).code_loss(codes, labels)


def test_unknown_hashing_method_is_rejected():
    with pytest.raises(ValueError, match="unknown hashing method"):
        train_hashing(torch.rand(4, 3, 32, 32), torch.arange(4) % 2, bits=8, num_classes=2,
                      mean=(0.5,) * 3, std=(0.5,) * 3, settings=HashingSettings(loss="nope"),
                      seed=0, progress=False)


@pytest.mark.parametrize("loss", ["dhd", "dpn", "orthohash"])
def test_the_trainer_rejects_labels_out_of_range_before_training(loss):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got \[0, 2\]"):
        train_hashing(torch.rand(4, 3, 32, 32), torch.arange(4) % 3, bits=8, num_classes=2,
                      mean=(0.5,) * 3, std=(0.5,) * 3, settings=HashingSettings(loss=loss),
                      seed=0, progress=False)


def toy_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 is dark, class 1 bright, class 2 red: told apart at a glance."""
    labels = torch.arange(n) % 3
    base = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8], [0.9, 0.1, 0.1]])[labels]
    noise = 0.05 * torch.randn(n, 3, 16, 16, generator=generator)
    return (base.view(n, 3, 1, 1) + noise).clamp(0, 1), labels


@pytest.mark.parametrize("loss", ["dhd", "dpn", "orthohash"])
def test_trainer_learns_codes_that_retrieve_the_right_class(loss):
    generator = torch.Generator().manual_seed(0)
    images, labels = toy_images(30, generator)
    queries, query_labels = toy_images(12, generator)
    settings = HashingSettings(loss=loss, steps=15, batch_size=30, lr=3e-3)
    net, losses = train_hashing(images, labels, bits=16, num_classes=3, mean=(0.5,) * 3,
                                std=(0.5,) * 3, settings=settings, seed=0, progress=False)
    assert len(losses) == 15 and sum(losses[-3:]) < sum(losses[:3])
    codes = encode(net, queries)
    db_codes = encode(net, images)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0} and codes.shape == (12, 16)
    assert mean_average_precision(codes, db_codes, query_labels, labels) > 0.9


@pytest.mark.parametrize("loss", ["dhd", "dpn", "orthohash"])
def test_trainer_is_deterministic_for_a_seed(loss):
    images, labels = toy_images(12, torch.Generator().manual_seed(1))
    settings = HashingSettings(loss=loss, steps=3, batch_size=6)
    kwargs = dict(bits=8, num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3, settings=settings,
                  progress=False)
    a, _ = train_hashing(images, labels, seed=3, **kwargs)
    b, _ = train_hashing(images, labels, seed=3, **kwargs)
    assert torch.equal(encode(a, images), encode(b, images))


@pytest.mark.parametrize("loss", ["dpn", "orthohash"])
def test_every_hashing_method_runs_end_to_end(tiny_protocol, loss):
    from iemlib.experiment import Config, run, summary

    config = Config(method="random", ipc=2, bits=16, hash=loss, profile="smoke", train_steps=2,
                    train_batch=16)
    record = run(config, device="cpu", progress=False, protocol=tiny_protocol)
    assert record["config"]["hash"] == loss and len(record["history"]["train_loss"]) == 2
    assert {"map", "map_at_1000", "precision_at_100"} <= set(record["metrics"])
    assert all(0 <= record["metrics"][name] <= 1 for name in ("map", "map_at_1000", "precision_at_100"))
    assert f"bits=16 {loss}" in summary(record)
