"""Herding and whole-set baselines: selection against brute force, real pixels, configs, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from iemlib.condense import CondenseSettings, CondenseTask, condense
from iemlib.data import Split
from iemlib.condense.herding import herding_select
from iemlib.condense.networks import early_network
from iemlib.experiment import PROFILES, Config
from iemlib.training import predict
from test_cli import FAST, cli, finish

SETTINGS = CondenseSettings(ipc=3, early_steps=1, pool_size=1)
PER_CLASS = 8


def make_task(protocol, seed: int = 0) -> CondenseTask:
    """The first PER_CLASS training images of each class (fast early-network training)."""
    train = protocol.train
    keep = torch.cat([torch.nonzero(train.labels == c).flatten()[:PER_CLASS]
                      for c in range(protocol.num_classes)]).sort().values
    small = Split(train.images[keep], train.labels[keep], train.indices[keep])
    return CondenseTask(small, protocol.num_classes, protocol.mean, protocol.std, seed=seed,
                        progress=False)


def brute_force_herding(points: np.ndarray, k: int) -> list[int]:
    """Try every unpicked candidate at every step; keep the first of the smallest distances."""
    target = points.mean(axis=0)
    picked: list[int] = []
    for _ in range(k):
        best, best_distance = None, np.inf
        for candidate in range(len(points)):
            if candidate in picked:
                continue
            running = points[picked + [candidate]].mean(axis=0)
            distance = np.linalg.norm(running - target)
            if distance < best_distance:
                best, best_distance = candidate, distance
        picked.append(best)
    return picked


@pytest.mark.parametrize("n,d,k,seed", [(12, 5, 4, 0), (9, 3, 9, 1), (30, 16, 7, 2), (1, 4, 1, 3)])
def test_herding_select_matches_brute_force(n, d, k, seed):
    points = np.random.default_rng(seed).normal(size=(n, d))
    chosen = herding_select(torch.from_numpy(points).float(), k)
    assert chosen.dtype == torch.long
    assert chosen.tolist() == brute_force_herding(points.astype(np.float32).astype(np.float64), k)


def test_herding_is_not_nearest_to_the_mean_and_breaks_ties_by_index():
    # mean 0: pick 1 (|1|), then 2 or 3 tie at -0.5 -> 2, then 0 (2/3 beats -1), then 3.
    # Nearest-to-the-mean would give [1, 2, 3, 0].
    points = torch.tensor([[3.0], [1.0], [-2.0], [-2.0]])
    assert herding_select(points, 4).tolist() == [1, 2, 0, 3]
    symmetric = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert herding_select(symmetric, 4).tolist() == [0, 1, 2, 3]
    points = torch.randn(20, 6, generator=torch.Generator().manual_seed(5))
    first = herding_select(points, 20)
    assert torch.equal(first, herding_select(points.clone(), 20))
    assert sorted(first.tolist()) == list(range(20))  # k = all: every row once


@pytest.mark.parametrize("shape,k,message", [
    ((5, 3), 6, "k=6"), ((5, 3), 0, "k=0"), ((5,), 1, "N×D"),
])
def test_herding_select_rejects_bad_input(shape, k, message):
    with pytest.raises(ValueError, match=message):
        herding_select(torch.zeros(shape), k)


def test_herding_picks_real_training_images_by_herding_the_early_embeddings(tiny_protocol):
    task = make_task(tiny_protocol)
    result = condense("herding", task, SETTINGS)
    chosen = torch.tensor(result.info["train_indices"])
    train = task.train
    assert result.synthetic.factor == 1 and result.seconds > 0
    assert result.synthetic.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert len(set(chosen.tolist())) == 30
    torch.testing.assert_close(result.synthetic.images, train.images[chosen].float() / 255,
                               rtol=0, atol=0)
    assert torch.equal(train.labels[chosen], result.synthetic.labels)
    # the picks are herding's over the embeddings of the early network
    embeddings = predict(early_network(task, SETTINGS, 0), train.images)
    for c in range(10):
        members = torch.nonzero(train.labels == c).flatten()
        expected = members[herding_select(embeddings[members], 3)]
        assert chosen[3 * c:3 * c + 3].tolist() == expected.tolist()
    other = condense("herding", make_task(tiny_protocol, seed=1), SETTINGS)
    assert other.info["train_indices"] != result.info["train_indices"]


def test_herding_rejects_ipc_above_the_class_size_before_training(tiny_protocol):
    with pytest.raises(ValueError, match=f"class 0 has {PER_CLASS} training images"):
        condense("herding", make_task(tiny_protocol),
                 replace(SETTINGS, ipc=PER_CLASS + 1, early_steps=10**6))


def test_whole_returns_every_training_image_with_its_label(tiny_protocol):
    result = condense("whole", make_task(tiny_protocol), SETTINGS)
    train = make_task(tiny_protocol).train
    stored = (result.synthetic.images * 255).round().to(torch.uint8).flatten(1)
    pixels = train.images.flatten(1)
    matches = torch.stack([(pixels == row).all(dim=1) for row in stored])
    assert matches.sum(dim=1).tolist() == [1] * len(train.labels)  # each is one training image
    found = matches.float().argmax(dim=1)
    assert sorted(found.tolist()) == list(range(len(train.labels)))  # and each one is there
    assert torch.equal(result.synthetic.labels, train.labels[found])
    assert result.synthetic.labels.tolist() == sorted(train.labels.tolist())
    assert result.seconds == 0 and result.info["per_class"] == [PER_CLASS] * 10


def test_configs_pin_what_herding_and_whole_ignore():
    whole = Config(method="whole", profile="cpu", ipc=10, factor=3, real_batch=7).resolved()
    assert (whole.ipc, whole.iterations, whole.factor) == (500, 0, 1)
    assert whole.real_batch is None and whole.early_steps is None and whole.network is None
    assert whole.resolved() == whole
    assert Config(method="whole", profile="cpu", ipc=50).resolved().key() == whole.key()
    smoke = Config(method="whole", profile="smoke").resolved()
    assert smoke.ipc == PROFILES["smoke"]["train_per_class"]
    assert Config(method="whole", profile="cpu", train_per_class=200).resolved().ipc == 200
    herding = Config(method="herding", profile="cpu", factor=2, perturb="filter").resolved()
    assert (herding.factor, herding.perturb, herding.network) == (1, None, "early")
    assert herding.pool_size == 1
    assert herding.iterations == 0 and herding.early_steps == PROFILES["cpu"]["early_steps"]
    assert Config(method="herding", profile="cpu", real_batch=3).resolved().key() == herding.key()
    assert Config(method="herding", profile="cpu", early_steps=3).resolved().key() != herding.key()
    with pytest.raises(ValueError, match="larger than the 500"):
        Config(method="herding", profile="cpu", ipc=501).resolved()


@pytest.mark.parametrize("method,ipc,stored", [("herding", 2, 20), ("whole", 50, 500)])
def test_cli_smoke_run(tmp_path, data_root, method, ipc, stored):
    out = tmp_path / f"{method}.json"
    args = ["--method", method, *FAST, "--early-steps", "1", "--out", str(out)]
    code, _, stderr = finish(cli(*args, data_root=data_root))
    assert code == 0, stderr
    record = json.loads(out.read_text())
    assert (record["config"]["method"], record["config"]["ipc"]) == (method, ipc)
    assert record["synthetic"]["stored"] == record["synthetic"]["decoded"] == stored
    scalars = [record["metrics"][name] for name in ("map", "map_at_1000", "precision_at_100")]
    assert all(0 <= value <= 1 for value in scalars)
    if method == "herding":
        assert len(set(record["condense_info"]["train_indices"])) == stored
    else:
        assert record["timings"]["condense_s"] == 0
