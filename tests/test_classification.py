"""The classification task: accuracy and the held-out set against hand-built cases, the trainer
on a separable toy problem, and `--task classify` end to end on real CIFAR-10."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from iemlib.__main__ import main
from iemlib.classification import accuracy, held_out, train_classifier
from iemlib.data import Protocol, Split
from iemlib.experiment import EVALUATIONS, TASKS, Config, run, summary
from iemlib.training import TrainSettings

MEAN_STD = dict(mean=(0.5,) * 3, std=(0.5,) * 3)


class CornerLogits(nn.Module):
    """Logits = the channels of the top-left pixel: a classifier whose answer we choose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0]


def images_voting_for(classes: list[int]) -> torch.Tensor:
    images = torch.zeros(len(classes), 3, 4, 4)
    images[torch.arange(len(classes)), torch.tensor(classes), 0, 0] = 1.0
    return images


def test_accuracy_matches_a_hand_count_across_batches():
    images = images_voting_for([0, 1, 2, 2, 1, 0, 0])
    labels = torch.tensor([0, 1, 2, 0, 0, 0, 1])  # predictions right at 0, 1, 2 and 5
    for batch_size in (1, 3, 500):
        assert accuracy(CornerLogits(), images, labels, batch_size=batch_size) == pytest.approx(4 / 7)
    uint8 = (images * 255).to(torch.uint8)  # stored pixels are scaled to [0, 1] first
    assert accuracy(CornerLogits(), uint8, labels) == pytest.approx(4 / 7)


def test_accuracy_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="as many labels as images"):
        accuracy(CornerLogits(), images_voting_for([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="at least one"):
        accuracy(CornerLogits(), torch.zeros(0, 3, 4, 4), torch.zeros(0, dtype=torch.long))


def split(source: torch.Tensor, indices: list[int]) -> Split:
    index = torch.tensor(indices)
    return Split(source[index], index % 3, index)


def hand_protocol(query: list[int], database: list[int], train: list[int]) -> Protocol:
    """Image i of the source is filled with the value i, so an image tells where it came from."""
    source = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2).clone()
    return Protocol("hand", 0, split(source, train), split(source, query), split(source, database),
                    ("a", "b", "c"), (0.5,) * 3, (0.5,) * 3)


def test_held_out_is_the_queries_and_the_database_outside_the_training_split():
    protocol = hand_protocol(query=[0, 1], database=[2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                             train=[2, 5, 7])
    images, labels = held_out(protocol)
    ids = images[:, 0, 0, 0].tolist()
    assert sorted(ids) == [0, 1, 3, 4, 6, 8, 9, 10, 11]
    assert labels.tolist() == [i % 3 for i in ids]  # labels stay with their images


def test_held_out_keeps_queries_whose_indices_count_in_another_folder():
    # ImageFolder protocols index queries in test/ and the database in train/: query 5 is not
    # database image 5, so it stays even though 5 is a training index
    protocol = hand_protocol(query=[5, 6], database=[2, 3, 4, 5], train=[4, 5])
    ids = held_out(protocol)[0][:, 0, 0, 0].tolist()
    assert sorted(ids) == [2, 3, 5, 6]


def toy_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 is dark, class 1 bright, class 2 red: told apart at a glance."""
    labels = torch.arange(n) % 3
    base = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8], [0.9, 0.1, 0.1]])[labels]
    noise = 0.05 * torch.randn(n, 3, 16, 16, generator=generator)
    return (base.view(n, 3, 1, 1) + noise).clamp(0, 1), labels


def test_classifier_learns_a_separable_set():
    generator = torch.Generator().manual_seed(0)
    images, labels = toy_images(30, generator)
    tests, test_labels = toy_images(30, generator)
    settings = TrainSettings(steps=12, batch_size=30, lr=3e-3)
    net, losses = train_classifier(images, labels, num_classes=3, settings=settings, seed=0,
                                   progress=False, **MEAN_STD)
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert accuracy(net, tests, test_labels) > 0.9


def test_classifier_repeats_for_a_seed():
    images, labels = toy_images(12, torch.Generator().manual_seed(1))
    kwargs = dict(num_classes=3, settings=TrainSettings(steps=3, batch_size=6), progress=False,
                  **MEAN_STD)
    net, losses = train_classifier(images, labels, seed=0, **kwargs)
    again, again_losses = train_classifier(images, labels, seed=0, **kwargs)
    other, other_losses = train_classifier(images, labels, seed=1, **kwargs)
    assert again_losses == losses and other_losses != losses
    assert torch.equal(again(images), net(images)) and not torch.equal(other(images), net(images))


def test_classify_task_is_registered_and_bad_tasks_are_rejected():
    assert set(TASKS) == set(EVALUATIONS) == {"retrieval", "classify"}
    with pytest.raises(ValueError, match=r"unknown task 'nope': choose from \['retrieval', 'classify'\]"):
        Config(task="nope").resolved()


def test_a_classify_run_repeats_for_a_seed(tiny_protocol):
    config = Config(task="classify", method="random", ipc=2, profile="smoke", train_steps=2,
                    train_batch=16)
    records = [run(config, device="cpu", progress=False, protocol=tiny_protocol) for _ in range(2)]
    assert records[0]["metrics"] == records[1]["metrics"]
    assert records[0]["history"]["train_loss"] == records[1]["history"]["train_loss"]


def test_cli_classify_smoke_run_writes_an_accuracy_record(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    out = tmp_path / "classify.json"
    code = main(["run", "--task", "classify", "--method", "random", "--profile", "smoke",
                 "--ipc", "2", "--train-steps", "3", "--train-batch", "16", "--device", "cpu",
                 "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["config"]["task"] == "classify"
    assert set(record["metrics"]) == {"accuracy"} and 0 <= record["metrics"]["accuracy"] <= 1
    assert set(record["timings"]) == {"condense_s", "train_s", "eval_s"}
    assert len(record["history"]["train_loss"]) == 3
    line = capsys.readouterr().out
    assert "classify: top-1 accuracy" in line and summary(record) in line
    assert "bits=" not in summary(record)  # code length and hashing loss do not apply


def test_cli_rejects_an_unknown_task_in_one_line(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--task", "sort", "--method", "random", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown task 'sort'" in err and len(err.splitlines()) == 1 and not out.exists()
