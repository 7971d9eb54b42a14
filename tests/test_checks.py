"""Settings refuse numbers that cannot run, naming the setting, and take the boundary values."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from iemlib.condense import CondenseSettings
from iemlib.hashing.trainer import HashingSettings
from iemlib.training import TrainSettings


@pytest.mark.parametrize("name,value,rule", [
    ("ipc", 0, ">= 1"), ("real_batch", 0, ">= 1"), ("factor", 0, ">= 1"),
    ("pool_size", 0, ">= 1"), ("checkpoint_every", 0, ">= 1"), ("outer_loop", 0, ">= 1"),
    ("iterations", -1, ">= 0"), ("early_steps", -1, ">= 0"), ("inner_loop", -1, ">= 0"),
    ("alpha", -0.1, ">= 0"), ("alpha", math.nan, ">= 0"), ("lr", 0.0, "> 0"),
    ("lr", math.inf, "> 0"), ("momentum", 1.0, "in [0, 1)"), ("momentum", -0.5, "in [0, 1)"),
    ("factor", "2", ">= 1")])
def test_condensation_settings_refuse_a_number_that_cannot_run(name, value, rule):
    with pytest.raises(ValueError, match=f"^{name} must be {re.escape(rule)}, got"):
        CondenseSettings(**{"ipc": 1, name: value})


def test_condensation_settings_take_the_boundaries():
    settings = CondenseSettings(ipc=1, iterations=0, early_steps=0, inner_loop=0, alpha=0.0,
                                momentum=0.0, lr=1e-9)
    assert settings.iterations == 0 and settings.momentum == 0.0


def test_numpy_numbers_are_numbers():  # a notebook's np.arange or np.linspace, say
    settings = CondenseSettings(ipc=np.int64(10), iterations=np.int64(5), alpha=np.float32(0.05))
    assert settings.ipc == 10
    with pytest.raises(ValueError, match="factor must be >= 1, got np.int64"):
        CondenseSettings(ipc=1, factor=np.int64(0))


@pytest.mark.parametrize("settings", [TrainSettings, HashingSettings])
@pytest.mark.parametrize("name,value", [("steps", 0), ("batch_size", 0), ("lr", 0.0),
                                        ("lr", -1e-3), ("weight_decay", -1.0),
                                        ("weight_decay", math.nan)])
def test_training_settings_refuse_a_number_that_cannot_run(settings, name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        settings(**{name: value})
    assert settings(weight_decay=0.0).weight_decay == 0.0
