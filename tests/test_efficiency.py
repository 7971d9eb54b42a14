"""Condensation cost: the meta file read back, the load flag, convergence and budgets."""

from __future__ import annotations

import json

import pytest

from iemlib.efficiency import (best_within, compare_at_budgets, condense_cost, load_per_core,
                               loaded, time_to_convergence)
from iemlib.experiment import Config, synthetic_path


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
