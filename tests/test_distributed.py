"""Several processes, one condensation: sharding the classes changes nothing in the result.

Two processes on the gloo backend (CPU) must reach the synthetic images one process reaches,
exactly: each class's image gradient comes from one process, the others add exact zeros, and on
CPU a ConvNet's per-image arithmetic does not depend on which images share its batch. Only the
loss history is summed in another order (a process's classes, then the processes), so it
matches to float rounding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from iemlib import distributed
from iemlib.__main__ import main
from iemlib.augment import DSA
from iemlib.condense import CondenseSettings, CondenseTask, Interrupted, condense, dm, idc
from iemlib.condense.gradient_matching import augmenter, classifier, matching_loss
from iemlib.condense.networks import random_network
from iemlib.data import Split
from iemlib.seeding import generator

SMALL = CondenseSettings(ipc=2, iterations=4, real_batch=6, checkpoint_every=2)
CASES = {  # name: (method, settings)
    "dm": ("dm", SMALL),
    "iem": ("iem", replace(SMALL, factor=2, perturb="filter", alpha=0.05)),
    "dsa": ("dsa", replace(SMALL, outer_loop=2, inner_loop=1, lr=0.1)),
    "idc": ("idc", replace(SMALL, factor=2, outer_loop=2, inner_loop=1, lr=0.016)),
}
LOSS_TOLERANCE = dict(rtol=1e-5, atol=0.0)  # the loss sums in another order: rounding only


@contextmanager
def one_thread():
    """One torch thread, as each launched process has (torchrun's default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- which process computes which class ----------------------------------------------------

def test_shard_deals_every_class_to_one_process():
    shares = [list(distributed.shard(10, rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="3 processes for 2 classes.*at most 2"):
        distributed.shard(2, 0, 3)


def test_one_process_is_the_whole_launch():
    assert not distributed.active() and distributed.is_main()
    assert distributed.owned_classes(10) == range(10)
    value = torch.tensor([1.5])
    assert distributed.all_reduce_(value) is value and value.item() == 1.5
    with distributed.session(torch.device("cpu")) as device:
        assert device == torch.device("cpu") and not distributed.active()


def test_torchrun_launches_run_only(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sweep", "--method", "dm"]) == 2
    assert "torchrun launches `run` only" in capsys.readouterr().err


# --- two processes against one ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data(tiny_protocol) -> tuple[Split, tuple, tuple]:
    """3 classes of the tiny CIFAR-10 slice at 16 px (so the two processes own 2 and 1)."""
    train = tiny_protocol.train
    keep = train.labels < 3
    images = F.interpolate(train.images[keep].float(), size=(16, 16), mode="bilinear",
                           antialias=True, align_corners=False).round().clamp(0, 255)
    split = Split(images.to(torch.uint8), train.labels[keep], train.indices[keep])
    return split, tiny_protocol.mean, tiny_protocol.std


def make_task(data: tuple, classes: int = 3, **kwargs) -> CondenseTask:
    split, mean, std = data
    return CondenseTask(split, classes, mean, std, seed=0, progress=False, **kwargs)


def shares_add_up(task: CondenseTask, loss: Callable[..., torch.Tensor]) -> None:
    """The loss terms and image gradients of the shares [0, 2] and [1] sum to the whole's."""
    synthetic = task.initial_set(2, 2)

    def run(classes):
        images = synthetic.images.clone().requires_grad_(True)
        value = loss(synthetic, task.class_indices(), images, generator(0, "step"), classes)
        value.backward()
        return value.detach(), images.grad

    (whole, grad), (first, grad_first), (second, grad_second) = map(run, (None, [0, 2], [1]))
    assert torch.equal(grad_first + grad_second, grad)  # each row from one share, 0 from the other
    assert not grad_first[synthetic.labels == 1].any() and grad_first.any() and grad_second.any()
    torch.testing.assert_close(first + second, whole, **LOSS_TOLERANCE)


def test_matching_losses_split_by_class(small_data):
    task = make_task(small_data)
    dsa_transform, net = DSA(mean=task.mean, std=task.std), random_network(task, SMALL, "test")
    shares_add_up(task, lambda synthetic, members, images, g, classes: dm.matching_loss(
        task, SMALL, synthetic, members, dsa_transform, net, images, g, classes=classes))
    transforms, model = augmenter(idc.MATCHING.augment, task), classifier(task, SMALL, "test")
    shares_add_up(task, lambda synthetic, members, images, g, classes: matching_loss(
        task, SMALL, synthetic, members, idc.MATCHING, transforms, model, images, g,
        classes=classes))


def condense_cases(data: tuple) -> dict[str, tuple[torch.Tensor, list[float]]]:
    results = {}
    for name, (method, settings) in CASES.items():
        result = condense(method, make_task(data), settings)
        results[name] = (result.synthetic.images, result.history)
    return results


def launched_process(rank: int, world: int, port: int, folder: Path) -> None:
    """One of ``world`` processes, with the environment torchrun gives it; rank 0 saves."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    data = torch.load(folder / "data.pt", weights_only=False)
    with distributed.session(torch.device("cpu")):
        results = condense_cases(data)
        checkpoint = folder / "dm.ckpt.pt"
        try:  # killed after 3 iterations: resumes from rank 0's checkpoint of iteration 2
            condense("dm", make_task(data, checkpoint=checkpoint, stop_after=3), SMALL)
        except Interrupted:
            dist.barrier()  # every process resumes from the finished checkpoint
        resumed = condense("dm", make_task(data, checkpoint=checkpoint, resume=True), SMALL)
        results["dm resumed"] = (resumed.synthetic.images, resumed.history)
        try:
            make_task(data, classes=1)
        except ValueError as error:
            results["bad launch"] = str(error)
        if distributed.is_main():
            torch.save(results, folder / "launched.pt")


def test_two_processes_condense_what_one_does(small_data, tmp_path):
    torch.save(small_data, tmp_path / "data.pt")
    mp.spawn(launched_process, args=(2, free_port(), tmp_path), nprocs=2)
    launched = torch.load(tmp_path / "launched.pt", weights_only=False)
    with one_thread():
        alone = condense_cases(small_data)
    alone["dm resumed"] = alone["dm"]
    for name, (images, history) in alone.items():
        assert torch.equal(launched[name][0], images), name
        torch.testing.assert_close(torch.tensor(launched[name][1]), torch.tensor(history),
                                   **LOSS_TOLERANCE)
    assert "2 processes for 1 classes" in launched["bad launch"]


def test_torchrun_cli_writes_the_record_of_one_process(tmp_path, data_root, monkeypatch):
    args = ["run", "--method", "iem", "--dataset", "cifar10", "--ipc", "2", "--bits", "16",
            "--profile", "smoke", "--iterations", "4", "--train-steps", "3", "--device", "cpu",
            "--quiet"]
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "iemlib", *args, "--out", str(tmp_path / "two.json")],
        env=env, capture_output=True, text=True, timeout=300)
    assert launch.returncode == 0, launch.stderr
    assert launch.stdout.count("mAP@all") == 1  # rank 0 alone reports
    with one_thread():
        assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert two["condense_info"]["processes"] == 2 and "processes" not in one["condense_info"]
    assert two["metrics"] == one["metrics"]
    torch.testing.assert_close(torch.tensor(two["history"]["condense_loss"]),
                               torch.tensor(one["history"]["condense_loss"]), **LOSS_TOLERANCE)
    sets = [torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("two", "one")]
    assert torch.equal(sets[0]["images"], sets[1]["images"])
    assert not (tmp_path / "two.ckpt.pt").exists()  # rank 0 removes its checkpoint
