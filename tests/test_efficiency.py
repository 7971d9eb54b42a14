"""Condensation cost: the meta file read back, the load flag, convergence, budgets and
re-timing a stored set."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from iemlib.__main__ import main
from iemlib.efficiency import (best_within, compare_at_budgets, condense_cost, load_per_core,
                               loaded, retime, retimed, time_to_convergence)
from iemlib.experiment import Config, run_cached, synthetic_path
from iemlib.synthetic import SyntheticSet


def test_condense_cost_reads_the_meta_of_the_condensed_set(tmp_path):
    config = Config(method="dm", ipc=2, profile="smoke", iterations=7)
    meta = synthetic_path(config.resolved(), tmp_path).with_suffix(".meta.json")
    meta.parent.mkdir(parents=True)
    env = {"cpu_count": 2, "loadavg": [2.0, 2.1, 1.9]}
    meta.write_text(json.dumps({"seconds": 12.5, "env": env, "created": "2026-01-01T00:00:00Z"}))
    cost = condense_cost(config, tmp_path)
    assert cost == {"seconds": 12.5, "env": env, "created": "2026-01-01T00:00:00Z"}
    with pytest.raises(FileNotFoundError):  # another iteration count is another set
        condense_cost(Config(method="dm", ipc=2, profile="smoke", iterations=8), tmp_path)


def test_load_is_the_highest_average_per_core_and_unknown_without_one():
    assert load_per_core({"cpu_count": 2, "loadavg": [4.5, 3.0, 2.0]}) == 2.25
    assert load_per_core({"cpu_count": 2}) is None
    assert load_per_core({"cpu_count": 2, "loadavg": None}) is None
    assert load_per_core({}) is None
    assert loaded({"cpu_count": 2, "loadavg": [2.0, 2.4, 2.2]}) is False
    assert loaded({"cpu_count": 2, "loadavg": [2.0, 2.6, 2.2]}) is True
    assert loaded({"cpu_count": 16, "loadavg": [4.0, 4.0, 4.0]}, limit=0.2) is True
    assert loaded({"cpu_count": 2}) is None


def test_convergence_is_the_fastest_point_near_the_best():
    points = [(400.0, 35.0), (50.0, 30.0), (100.0, 34.2), (200.0, 34.6)]
    assert time_to_convergence(points, tolerance=1.0) == (100.0, 34.2)
    assert time_to_convergence(points, tolerance=0.0) == (400.0, 35.0)
    assert time_to_convergence(points, tolerance=10.0) == (50.0, 30.0)
    assert time_to_convergence([(3.0, 1.0)], tolerance=0.0) == (3.0, 1.0)
    with pytest.raises(ValueError, match="at least one point"):
        time_to_convergence([], 1.0)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        time_to_convergence(points, -0.5)


def test_budgets_compare_the_best_score_reached_in_no_more_time():
    ours = [(10.0, 30.0), (40.0, 36.0), (20.0, 38.0)]
    theirs = [(100.0, 37.0), (5.0, 20.0), (30.0, 39.0)]
    assert best_within(ours, 25.0) == 38.0
    assert best_within(ours, 9.9) is None
    rows = compare_at_budgets(ours, theirs)
    assert [(r["seconds"], r["theirs"], r["ours"], r["wins"]) for r in rows] == [
        (5.0, 20.0, None, False), (30.0, 39.0, 38.0, False), (100.0, 37.0, 38.0, True)]
    assert compare_at_budgets(ours, []) == []


RETIMED = Config(dataset="cifar10", method="dm", ipc=1, profile="smoke", iterations=4,
                 train_steps=3)


def _stored_set(tmp_path, data_root, monkeypatch):
    """RETIMED run through a results cache in tmp_path: its set's path and meta as stored."""
    monkeypatch.setenv("IEMLIB_DATA", str(data_root))
    run_cached(RETIMED, tmp_path, device="cpu", progress=False)
    path = synthetic_path(RETIMED.resolved(), tmp_path)
    return path, json.loads(path.with_suffix(".meta.json").read_text())


def test_retime_makes_the_stored_set_again_and_keeps_the_earlier_time(tmp_path, data_root,
                                                                     monkeypatch):
    path, before = _stored_set(tmp_path, data_root, monkeypatch)
    stored = path.read_bytes()
    outcome = retime(RETIMED, tmp_path, device="cpu", progress=False)
    after = json.loads(path.with_suffix(".meta.json").read_text())
    assert path.read_bytes() == stored  # the set itself is not written again
    assert outcome["before"] == before["seconds"] and outcome["after"] == after["seconds"]
    assert after["earlier"] == [{k: before[k] for k in ("seconds", "env", "created")}]
    assert after["history"] == before["history"] and after["condense_key"] == before["condense_key"]
    assert after["env"]["loadavg"] == outcome["env_after"]["loadavg"]
    assert not path.with_suffix(".retime.ckpt.pt").exists()
    retime(RETIMED, tmp_path, device="cpu", progress=False)  # each time kept, oldest first
    again = json.loads(path.with_suffix(".meta.json").read_text())
    assert [e["created"] for e in again["earlier"]] == [before["created"], after["created"]]
    line = retimed(RETIMED, outcome)
    assert line.startswith("dm ipc=1, 4 iterations: ") and path.name in line


def test_retime_refuses_a_set_the_run_does_not_make(tmp_path, data_root, monkeypatch):
    path, before = _stored_set(tmp_path, data_root, monkeypatch)
    other = SyntheticSet.load(path)
    other.images[0, 0, 0, 0] = 1 - other.images[0, 0, 0, 0]  # one stored pixel changed
    other.save(path, dtype=torch.uint8)
    with pytest.raises(ValueError, match="another set than the one stored"):
        retime(RETIMED, tmp_path, device="cpu", progress=False)
    assert json.loads(path.with_suffix(".meta.json").read_text()) == before
    with pytest.raises(FileNotFoundError, match="no stored set to re-time"):
        retime(replace(RETIMED, ipc=2), tmp_path, device="cpu", progress=False)


def test_a_sweep_retimes_each_stored_set_once(tmp_path, data_root, monkeypatch, capsys):
    _stored_set(tmp_path, data_root, monkeypatch)
    args = ["sweep", "--dataset", "cifar10", "--method", "dm", "--ipc", "1", "2", "--bits", "16",
            "32", "--profile", "smoke", "--iterations", "4", "--train-steps", "3",
            "--results-dir", str(tmp_path), "--device", "cpu", "--quiet", "--retime"]
    assert main(args) == 1  # ipc 2 has no stored set
    out, err = capsys.readouterr()
    assert out.count("dm ipc=1, 4 iterations: ") == 1 and "the same set" in out
    assert "dm ipc=2: no stored set to re-time" in err
    assert not list(tmp_path.rglob("*ipc2*"))  # nothing was made for it
    assert main([*args[:5], "--notebook", "notebooks/06_ablation.py", "--retime"]) == 2
