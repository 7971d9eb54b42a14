"""Table II as data, the configurations that reproduce it, and the paper's ablation claims."""

from __future__ import annotations

import pytest

from iemlib.ablation import ablation_claims, ablation_config, cannot_run, table2_cells
from iemlib.experiment import Config
from iemlib.paper import table2_rows

# Table II of the paper, CIFAR-10 at 50 images a class, as printed: (NA, DA) -> mAP %
PRINTED_CIFAR10 = {(False, False): 43.22, (True, False): 47.99, (False, True): 57.73,
                   (True, True): 57.88}


def test_table2_rows_hold_the_printed_table():
    rows = table2_rows("cifar10")
    assert {(r["na"], r["da"]): r["map"] for r in rows} == PRINTED_CIFAR10
    assert {r["ipc"] for r in rows} == {50}
    assert len(table2_rows()) == 8
    assert {r["dataset"] for r in table2_rows()} == {"cifar10", "imagenet10"}
    assert table2_rows("imagenet20") == []


def test_switches_map_to_the_perturbation_and_the_factor():
    full = ablation_config(True, True, ipc=10, profile="cpu").resolved()
    assert full == Config(method="iem", ipc=10, profile="cpu").resolved()  # IEM's defaults
    assert (full.perturb, full.factor) == ("filter", 2)
    no_na = ablation_config(False, True, ipc=10, profile="cpu").resolved()
    assert (no_na.perturb, no_na.factor, no_na.network) == ("none", 2, "fresh")
    no_da = ablation_config(True, False, ipc=10, profile="cpu").resolved()
    assert (no_da.perturb, no_da.factor, no_da.alpha) == ("filter", 1, 0.05)
    keys = {ablation_config(na, da, ipc=10).resolved().key() for na, da in PRINTED_CIFAR10}
    assert len(keys) == 4


def test_table2_cells_carry_the_paper_and_a_config_per_row():
    cells = table2_cells("cifar10", profile="cpu", bits=32, seed=3)
    assert [(c["na"], c["da"]) for c in cells] == list(PRINTED_CIFAR10)
    assert [c["paper"] for c in cells] == list(PRINTED_CIFAR10.values())
    for cell in cells:
        config = cell["config"]
        assert (config.method, config.ipc, config.bits, config.seed) == ("iem", 50, 32, 3)
        assert (config.perturb is None) == cell["na"] and (config.factor is None) == cell["da"]
    small = table2_cells("cifar10", ipc=2, profile="smoke")
    assert {c["config"].ipc for c in small} == {2} and {c["ipc"] for c in small} == {50}
    with pytest.raises(ValueError, match="no rows for 'imagenet20'"):
        table2_cells("imagenet20")


def test_the_paper_supports_its_own_claims_and_a_shuffled_table_does_not():
    assert all(ablation_claims(PRINTED_CIFAR10).values())
    imagenet = {(r["na"], r["da"]): r["map"] for r in table2_rows("imagenet10")}
    assert all(ablation_claims(imagenet).values())
    swapped = {**PRINTED_CIFAR10, (True, True): 47.0, (True, False): 57.88}
    claims = ablation_claims(swapped)
    assert claims == {"NA alone beats neither": True, "DA alone beats neither": True,
                      "NA and DA together are best": False}
    worse = {**PRINTED_CIFAR10, (True, False): 40.0}
    assert ablation_claims(worse)["NA alone beats neither"] is False


def test_claims_need_all_four_combinations():
    with pytest.raises(ValueError, match="needs every \\(NA, DA\\); missing \\[\\(False, False\\)\\]"):
        ablation_claims({k: v for k, v in PRINTED_CIFAR10.items() if k != (False, False)})


def test_cannot_run_names_what_is_wrong_and_passes_what_runs():
    assert cannot_run(Config(method="iem", ipc=10, factor=4, profile="cpu")) is None
    assert cannot_run(Config(method="dm", ipc=10, profile="cpu")) is None
    assert cannot_run(Config(method="iem", ipc=10, factor=3, profile="cpu")) == (
        "32 px images do not split into 3 × 3 tiles")
    assert "larger than the 50 training images" in cannot_run(
        Config(method="iem", ipc=10, factor=3, profile="smoke"))
    assert "unknown" in cannot_run(Config(method="nope"))
