"""The command line end to end on real CIFAR-10: records, bad arguments, and a killed run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from iemlib.experiment import PROFILES, Config, record_path, resolve_device

FAST = ["--dataset", "cifar10", "--ipc", "2", "--bits", "16", "--hash", "dhd", "--profile", "smoke",
        "--seed", "0", "--train-steps", "3", "--quiet"]


def cli(*args: str, data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "IEMLIB_DATA": str(data_root)}
    return subprocess.Popen([sys.executable, "-m", "iemlib", "run", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def test_smoke_run_writes_a_complete_record(tmp_path, data_root):
    out = tmp_path / "iem.json"
    code, stdout, stderr = finish(cli("--method", "iem", *FAST, "--out", str(out), data_root=data_root))
    assert code == 0, stderr
    record = json.loads(out.read_text())
    config = record["config"]
    for name in ("dataset", "method", "ipc", "bits", "hash", "profile", "seed"):
        assert name in config
    assert (config["method"], config["ipc"], config["bits"], config["profile"]) == ("iem", 2, 16, "smoke")
    assert config["factor"] == 2 and config["perturb"] == "filter"  # IEM's augmentations are on
    assert config["iterations"] == PROFILES["smoke"]["iterations"]
    assert {"map", "map_at_1000", "precision_at_100"} <= set(record["metrics"])
    assert all(0 <= record["metrics"][name] <= 1 for name in ("map", "map_at_1000", "precision_at_100"))
    assert set(record["timings"]) == {"condense_s", "train_s", "eval_s"}
    assert record["env"]["device"] == "cpu" and record["env"]["torch"]
    assert record["split"]["seed"] == 0 and len(record["split"]["query_indices"]) == 100
    assert len(record["history"]["condense_loss"]) == config["iterations"]
    assert "mAP@all" in stdout
    assert not out.with_suffix(".ckpt.pt").exists()  # the checkpoint goes once the record is written


@pytest.mark.parametrize("args,message", [
    (["--method", "nope"], "unknown method"),
    (["--dataset", "imagenet-that-is-not-here"], "unknown data set"),
    (["--ipc", "501", "--method", "random", "--profile", "cpu"], "larger than the 500 training images"),
    (["--bits", "0"], "bits must be >= 1"),
    (["--profile", "huge"], "unknown profile"),
    (["--ipc", "ten"], "invalid int value"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--factor", "0"], "factor must be >= 1, got 0"),
    (["--alpha", "nan"], "alpha must be >= 0, got nan"),
    (["--image-size", "0"], "image_size must be a positive integer"),
])
def test_bad_arguments_fail_in_one_line_and_write_nothing(tmp_path, data_root, args, message):
    out = tmp_path / "record.json"
    code, _, stderr = finish(cli(*args, "--out", str(out), data_root=data_root))
    assert code != 0
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_data_is_one_clear_error(tmp_path):
    code, _, stderr = finish(cli("--method", "random", *FAST, "--out", str(tmp_path / "r.json"),
                                 data_root=tmp_path / "empty"))
    assert code != 0 and "CIFAR-10 not found" in stderr and str(tmp_path / "empty") in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, data_root):
    args = ["--method", "dm", *FAST, "--iterations", "40", "--checkpoint-every", "4"]
    straight = tmp_path / "straight.json"
    assert finish(cli(*args, "--out", str(straight), data_root=data_root))[0] == 0

    killed = tmp_path / "killed.json"
    checkpoint = killed.with_suffix(".ckpt.pt")
    process = cli(*args, "--out", str(killed), data_root=data_root)
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert checkpoint.exists() and not killed.exists()

    code, _, stderr = finish(cli(*args, "--resume", "--out", str(killed), data_root=data_root))
    assert code == 0, stderr
    a, b = json.loads(straight.read_text()), json.loads(killed.read_text())
    assert b["condense_info"]["resumed_from"] > 0
    assert a["history"]["condense_loss"] == b["history"]["condense_loss"]
    assert a["metrics"] == b["metrics"]


@pytest.mark.parametrize("gpus,device,error", [
    (0, "cuda", "sees 0 CUDA GPU(s)"), (1, "cuda:1", "sees 1 CUDA GPU(s)"), (0, "gpu", "unknown"),
    (1, "cuda:0", None), (0, "cpu", None)])
def test_a_device_this_machine_lacks_is_a_clear_error(monkeypatch, gpus, device, error):
    monkeypatch.setattr("torch.cuda.device_count", lambda: gpus)
    if error is None:
        assert resolve_device(device) == torch.device(device)
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            resolve_device(device)


def test_image_size_resizes_cifar10_as_the_record_says(data_root, monkeypatch):
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    config = Config(method="random", profile="smoke", image_size=16).resolved()
    protocol = config.protocol()
    assert config.image_size == 16
    assert protocol.train.images.shape[-2:] == protocol.database.images.shape[-2:] == (16, 16)
    assert Config(method="random", profile="smoke").resolved().protocol().train.images.shape[-1] == 32


def test_config_resolution_pins_what_a_method_does_not_use():
    dm = Config(method="dm", profile="cpu", factor=2, perturb="filter").resolved()
    assert (dm.factor, dm.perturb, dm.alpha, dm.network) == (1, "none", 0.0, "fresh")
    iem = Config(method="iem", profile="cpu").resolved()
    assert iem.factor == 2 and iem.iterations == 200 and iem.resolved() == iem
    assert Config(method="iem", profile="cpu", alpha=0.1).resolved().key() != iem.key()


def test_an_image_folder_runs_end_to_end(tmp_path, data_root):
    folder = data_root / "imagenette-mini"
    if not folder.is_dir():
        pytest.skip(f"no ImageFolder data at {folder}")
    out = tmp_path / "folder.json"
    args = ["--dataset", str(folder), "--method", "random", "--ipc", "1", "--bits", "8",
            "--profile", "smoke", "--train-steps", "2", "--quiet", "--out", str(out)]
    code, _, stderr = finish(cli(*args, data_root=data_root))
    assert code == 0, stderr
    record = json.loads(out.read_text())
    assert record["config"]["dataset"] == str(folder) and record["config"]["image_size"] == 32
    assert record["split"]["sizes"] == {"train": 500, "query": 100, "database": 1000}


def test_resnetap_runs_end_to_end_on_chosen_classes(tmp_path, data_root):
    folder = data_root / "imagenette-mini"
    if not folder.is_dir():
        pytest.skip(f"no ImageFolder data at {folder}")
    out = tmp_path / "resnetap.json"
    classes = "n03888257,n01440764"  # not in sorted order: labels follow this order
    # 8 px (ResNetAP's 3x3 stem, stages at 8, 4, 2, 1 px) and two classes keep it to seconds.
    args = ["--dataset", str(folder), "--method", "random", "--ipc", "1", "--bits", "8",
            "--profile", "smoke", "--train-steps", "2", "--backbone", "resnetap",
            "--image-size", "8", "--classes", classes, "--quiet", "--out", str(out)]
    code, _, stderr = finish(cli(*args, data_root=data_root))
    assert code == 0, stderr
    record = json.loads(out.read_text())
    config = record["config"]
    assert (config["backbone"], config["image_size"], config["classes"]) == ("resnetap", 8, classes)
    assert record["split"]["sizes"] == {"train": 100, "query": 20, "database": 200}
    assert record["split"]["counts"]["classes"] == classes.split(",")
    assert 0 <= record["metrics"]["map"] <= 1


def test_image_folders_get_the_imagenet_protocol(tmp_path):
    for profile in ("cpu", "paper"):
        for dataset in ("imagenet10", "imagenet20", str(tmp_path)):
            c = Config(dataset=dataset, method="dm", profile=profile).resolved()
            assert (c.query_per_class, c.train_per_class, c.database_per_class) == (None, 130, None)
    cpu = Config(dataset="imagenet10", method="iem", profile="cpu").resolved()
    paper = Config(dataset="imagenet10", method="iem", profile="paper").resolved()
    assert (cpu.backbone, cpu.image_size, cpu.factor) == ("convnet", 32, 2)
    assert (paper.backbone, paper.image_size, paper.factor) == ("resnetap", 224, 3)
    smoke = Config(dataset="imagenet10", profile="smoke").resolved()
    assert (smoke.query_per_class, smoke.train_per_class, smoke.database_per_class) == (10, 50, 100)
    # CIFAR-10 keeps its protocol, 32 px and ConvNet-3 in every profile.
    for profile in ("smoke", "cpu", "paper"):
        c = Config(dataset="cifar10", method="dm", profile=profile).resolved()
        assert (c.backbone, c.image_size) == ("convnet", 32)
    assert Config(method="dm", profile="cpu").resolved().train_per_class == 500
    # Explicit settings win over the profile.
    c = Config(dataset="imagenet10", profile="paper", backbone="convnet", image_size=64).resolved()
    assert (c.backbone, c.image_size) == ("convnet", 64)


def test_classes_setting(tmp_path):
    (tmp_path / "my set" / "train").mkdir(parents=True)
    folder = str(tmp_path / "my set")
    c = Config(dataset=folder, classes=" b, a", profile="smoke").resolved()
    assert c.classes == "b,a" and c.class_list() == ("b", "a")
    assert c.key() != Config(dataset=folder, profile="smoke").resolved().key()
    def folder_name(config: Config) -> str:
        return record_path(config.resolved(), tmp_path).parent.name
    assert folder_name(c) == "my set-2classes"
    assert folder_name(Config(dataset=folder, profile="smoke")) == "my set"
    assert folder_name(Config(dataset="imagenet20")) == "imagenet20"
    # Without classes the key is what it was before the setting existed (None is not hashed).
    assert "classes" not in json.dumps({k: v for k, v in vars(Config().resolved()).items()
                                        if v is not None})
    for dataset, classes, message in (("cifar10", "cat", "fixed class list"),
                                      ("imagenet10", "n02869837", "fixed class list"),
                                      (folder, "a,,b", "comma-separated folder names")):
        with pytest.raises(ValueError, match=message):
            Config(dataset=dataset, classes=classes).resolved()
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet'.*resnetap"):
        Config(backbone="resnet").resolved()


@pytest.mark.parametrize("args,message", [
    (["--classes", "n01440764,nope"], "unknown classes ['nope']"),
    (["--backbone", "vgg"], "unknown backbone 'vgg'"),
])
def test_bad_folder_arguments_fail_in_one_line(tmp_path, data_root, args, message):
    folder = data_root / "imagenette-mini"
    if not folder.is_dir():
        pytest.skip(f"no ImageFolder data at {folder}")
    out = tmp_path / "record.json"
    code, _, stderr = finish(cli("--dataset", str(folder), "--method", "random", "--profile",
                                 "smoke", *args, "--out", str(out), data_root=data_root))
    assert code != 0 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()
