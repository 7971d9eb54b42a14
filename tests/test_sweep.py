"""Sweeps: the grid, the results cache (no rerun), failures recorded, and a killed sweep resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iemlib.experiment import Config, record_path, synthetic_path
from iemlib.sweep import failure_path, grid, run_sweep, table

SMOKE = Config(dataset="cifar10", profile="smoke", train_steps=3)


def sweep_cli(*args: str, data_root: Path, results: Path) -> subprocess.Popen:
    env = {**os.environ, "IEMLIB_DATA": str(data_root)}
    return subprocess.Popen([sys.executable, "-m", "iemlib", "sweep", *args, "--results-dir",
                             str(results), "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_grid_is_the_product_without_duplicates_and_groups_shared_sets():
    configs = grid(SMOKE, method=["dm", "random"], ipc=[1, 1, 2], bits=[16, 32])
    assert len(configs) == 2 * 2 * 2
    assert len({c.resolved().key() for c in configs}) == len(configs)
    # the two code lengths of one condensed set are neighbours
    condense_keys = [c.resolved().condense_key() for c in configs]
    for i in range(0, len(configs), 2):
        assert condense_keys[i] == condense_keys[i + 1]
    assert configs[0].method == "dm" and configs[0].ipc == 1  # the grid's own order otherwise


def test_grid_rejects_an_axis_it_cannot_sweep():
    with pytest.raises(ValueError, match="cannot sweep over \\['colour'\\]"):
        grid(SMOKE, colour=["red"])


def test_any_setting_can_be_an_axis_and_the_table_shows_it():
    configs = grid(SMOKE, method=["iem"], alpha=[0.01, 0.1], factor=[1, 2])
    assert {(c.alpha, c.factor) for c in configs} == {(0.01, 1), (0.01, 2), (0.1, 1), (0.1, 2)}
    from iemlib.sweep import Outcome
    header = table([Outcome(c, "failed") for c in configs]).splitlines()[0].split()
    assert "alpha" in header and "factor" in header and "momentum" not in header


def test_a_sweep_runs_each_configuration_once_and_records_failures(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    configs = grid(SMOKE, method=["random"], ipc=[1, 2, 999], bits=[8])
    first = run_sweep(configs, tmp_path, device="cpu", progress=False)
    assert [o.status for o in first] == ["ran", "ran", "failed"]
    assert "larger than the 50 training images" in first[2].error
    failed = json.loads(failure_path(configs[2], tmp_path).read_text())
    assert failed["config"]["ipc"] == 999 and "Traceback" in failed["traceback"]
    for outcome in first[:2]:
        assert record_path(outcome.config, tmp_path).exists()
        assert synthetic_path(outcome.config, tmp_path).exists()

    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = run_sweep(configs, tmp_path, device="cpu", progress=False)
    assert [o.status for o in again] == ["cached", "cached", "failed"]
    assert [o.record for o in again[:2]] == [o.record for o in first[:2]]
    assert [p.stat().st_mtime_ns for p in files if "failed" not in p.parts] == \
        [m for p, m in zip(files, mtimes) if "failed" not in p.parts]  # nothing rewritten
    text = table(again)
    assert len(text.splitlines()) == 4 and "failed" in text.splitlines()[3]


def test_records_of_other_code_lengths_reuse_the_condensed_set(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    configs = grid(replace_iterations(SMOKE, 4), method=["dm"], ipc=[1], bits=[8, 16])
    outcomes = run_sweep(configs, tmp_path, device="cpu", progress=False)
    short, long = (o.record for o in outcomes)
    assert short["synthetic"]["file"] == long["synthetic"]["file"]
    assert "reused" not in short["condense_info"] and long["condense_info"]["reused"]
    assert long["timings"]["condense_s"] == short["timings"]["condense_s"]
    assert long["history"]["condense_loss"] == short["history"]["condense_loss"]


def replace_iterations(config: Config, iterations: int) -> Config:
    from dataclasses import replace
    return replace(config, iterations=iterations)


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, data_root):
    args = ["--method", "dm", "--ipc", "2", "--bits", "8", "16", "--profile", "smoke",
            "--train-steps", "3", "--iterations", "16", "--checkpoint-every", "2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code = sweep_cli(*args, data_root=data_root, results=straight).wait(timeout=600)
    assert code == 0

    process = sweep_cli(*args, data_root=data_root, results=killed)
    deadline = time.time() + 300
    while not list(killed.rglob("*.ckpt.pt")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert list(killed.rglob("*.ckpt.pt")) and not list(killed.rglob("dm-*b-*.json"))

    process = sweep_cli(*args, data_root=data_root, results=killed)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert out.count("ran") == 2
    for path in sorted(straight.rglob("dm-*b-*.json")):
        a = json.loads(path.read_text())
        b = json.loads((killed / path.relative_to(straight)).read_text())
        assert a["metrics"] == b["metrics"]
        assert a["history"]["condense_loss"] == b["history"]["condense_loss"]
    assert not list(killed.rglob("*.ckpt.pt"))  # checkpoints go once the records are written


def test_the_sweep_command_exits_non_zero_when_a_configuration_fails(tmp_path, data_root):
    process = sweep_cli("--method", "random", "nope", "--ipc", "1", "--bits", "8", "--profile",
                        "smoke", "--train-steps", "2", data_root=data_root, results=tmp_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 1
    assert "1 of 2 configurations failed" in err
    assert "unknown method 'nope'" in json.loads(next(tmp_path.rglob("failed/*.json")).read_text())["error"]
    assert out.splitlines()[0].startswith("status")


def test_table1_comparison_sets_a_record_beside_the_paper(tmp_path):
    from iemlib.experiment import write_record
    from iemlib.report import table1_comparison

    config = Config(dataset="cifar10", method="dm", ipc=10, bits=32, profile="cpu").resolved()
    write_record({"config": {}, "metrics": {"map": 0.25, "map_at_1000": 0.3125}},
                 record_path(config, tmp_path))
    rows = table1_comparison("cpu", results_dir=tmp_path)
    assert len(rows) == 6 * 3 * 2  # six methods, three ipc, two code lengths
    (filled,) = [r for r in rows if r["ours"] is not None]
    assert (filled["method"], filled["ipc"], filled["bits"]) == ("dm", 10, 32)
    assert filled["ours"] == 31.25 and filled["ours_all"] == 25.0 and filled["paper"] == 29.95
