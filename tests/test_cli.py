"""The command line end to end on real CIFAR-10: records, bad arguments, and a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iemlib.experiment import PROFILES, Config

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
    assert set(record["metrics"]) == {"map", "map_at_1000", "precision_at_100"}
    assert all(0 <= value <= 1 for value in record["metrics"].values())
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
