"""Goldens: written from executed notebooks, checked within tolerance, every difference listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iemlib.__main__ import main
from iemlib.goldens import (DEFAULT_TOLERANCE, check_goldens, compare, golden_path,
                            write_goldens)
from iemlib.keynumbers import METADATA_KEY


def executed(folder: Path, name: str, numbers: dict | None, profile: str | None = "smoke") -> Path:
    """A hand-built notebook as papermill leaves it, showing ``numbers`` (None: nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    outputs = [] if numbers is None else [{"output_type": "display_data", "data": {},
                                           "metadata": {METADATA_KEY: numbers}}]
    parameters = {} if profile is None else {"profile": profile}
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps({"metadata": {"papermill": {"parameters": parameters}},
                                "cells": [{"cell_type": "code", "outputs": outputs}]}))
    return path


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    return tmp_path / "executed", tmp_path / "goldens"


def test_written_goldens_hold_profile_default_tolerance_and_numbers(folders):
    runs, goldens = folders
    executed(runs, "01_study", {"mAP DM": 31.25, "mAP IEM": 40.5})
    executed(runs, "02_plain", None)  # shows no key numbers: no golden
    assert write_goldens(runs, goldens) == [goldens / "01_study.json"]
    assert json.loads((goldens / "01_study.json").read_text()) == {
        "profile": "smoke", "tolerance": {"default": {"abs": 0.5, "rel": 0.0}},
        "numbers": {"mAP DM": 31.25, "mAP IEM": 40.5}}
    assert check_goldens(runs, goldens) == []


def test_a_refresh_takes_the_new_numbers_and_keeps_the_tolerances(folders):
    runs, goldens = folders
    tolerance = {"default": {"abs": 0.1, "rel": 0.0}, "time": {"rel": 0.5}}
    goldens.mkdir()
    (goldens / "03_x.json").write_text(json.dumps(
        {"profile": "smoke", "tolerance": tolerance, "numbers": {"old": 1.0}}))
    executed(runs, "03_x", {"time": 12.0}, profile="cpu")
    write_goldens(runs, goldens)
    assert json.loads((goldens / "03_x.json").read_text()) == {
        "profile": "cpu", "tolerance": tolerance, "numbers": {"time": 12.0}}


def test_a_notebook_not_run_by_papermill_with_a_profile_gets_no_golden(folders):
    runs, goldens = folders
    executed(runs, "04_y", {"a": 1.0}, profile=None)
    with pytest.raises(ValueError, match="-p profile smoke"):
        write_goldens(runs, goldens)


@pytest.mark.parametrize("value,passes", [(10.5, True), (9.5, True), (10.5000001, False),
                                          (9.4, False)])
def test_the_default_tolerance_is_half_a_point_either_way(value, passes):
    golden = {"profile": "smoke", "numbers": {"mAP": 10.0}}
    assert (compare({"mAP": value}, golden, "smoke") == []) is passes
    assert DEFAULT_TOLERANCE == {"abs": 0.5, "rel": 0.0}


def test_a_number_passes_within_abs_or_within_rel_and_names_override_the_default():
    golden = {"profile": "smoke",
              "tolerance": {"default": {"abs": 0.125, "rel": 0.01}, "time": {"abs": 0, "rel": 0.5}},
              "numbers": {"big": 1000.0, "small": 1.0, "time": 4.0}}
    assert compare({"big": 1009.0, "small": 1.125, "time": 6.0}, golden, "smoke") == []
    problems = compare({"big": 1011.0, "small": 1.25, "time": 6.5}, golden, "smoke", "ch")
    assert problems == [
        "ch: big = 1011.0000, golden 1000.0000 (differs by 11.0000, tolerance 10.0000)",
        "ch: small = 1.2500, golden 1.0000 (differs by 0.2500, tolerance 0.1250)",
        "ch: time = 6.5000, golden 4.0000 (differs by 2.5000, tolerance 2.0000)"]


def test_every_difference_is_listed(folders):
    runs, goldens = folders
    executed(runs, "01_a", {"kept": 1.0, "moved": 5.0, "renamed": 3.0})
    executed(runs, "02_b", {"x": 1.0})
    executed(runs, "03_c", {"y": 1.0})
    executed(runs, "05_plain", None)  # no key numbers and no golden: nothing to check
    write_goldens(runs, goldens)
    (goldens / "03_c.json").unlink()
    (goldens / "04_gone.json").write_text((goldens / "02_b.json").read_text())
    executed(runs, "01_a", {"kept": 1.2, "moved": 6.0, "new name": 3.0})
    executed(runs, "02_b", {"x": 1.0}, profile="cpu")

    problems = check_goldens(runs, goldens)
    assert problems == [
        "01_a: moved = 6.0000, golden 5.0000 (differs by 1.0000, tolerance 0.5000)",
        "01_a: renamed is in the golden but the notebook does not show it",
        "01_a: new name = 3.0000 has no golden; refresh the goldens with `make goldens`",
        "02_b: executed with profile cpu, its golden is for smoke",
        f"03_c: shows key numbers but has no golden {goldens / '03_c.json'}; create it with "
        f"`make goldens` (python -m iemlib goldens write {runs})",
        f"04_gone: golden {goldens / '04_gone.json'} but no executed notebook 04_gone.ipynb "
        f"in {runs}",
    ]


def test_a_golden_whose_notebook_shows_nothing_fails(folders):
    runs, goldens = folders
    executed(runs, "01_a", {"a": 1.0})
    write_goldens(runs, goldens)
    executed(runs, "01_a", None)
    assert check_goldens(runs, goldens) == [
        "01_a: a is in the golden but the notebook does not show it"]


def test_golden_path_is_named_by_the_chapter():
    assert golden_path("tests/goldens", "_build/test/executed/06_ablation.ipynb") == \
        Path("tests/goldens/06_ablation.json")


def test_the_command_line_writes_checks_and_fails_listing_differences(folders, capsys):
    runs, goldens = folders
    assert main(["goldens", "check", str(runs), "--goldens", str(goldens)]) == 2
    assert "run `make nbval`" in capsys.readouterr().err

    executed(runs, "01_a", {"a": 1.0, "b": 2.0})
    assert main(["goldens", "check", str(runs), "--goldens", str(goldens)]) == 1
    assert "create it with `make goldens`" in capsys.readouterr().err
    assert main(["goldens", "write", str(runs), "--goldens", str(goldens)]) == 0
    assert f"wrote {goldens / '01_a.json'}" in capsys.readouterr().out
    assert main(["goldens", "check", str(runs), "--goldens", str(goldens)]) == 0
    assert "key numbers of 1 executed notebooks" in capsys.readouterr().out

    executed(runs, "01_a", {"a": 2.0, "b": 3.0})
    assert main(["goldens", "check", str(runs), "--goldens", str(goldens)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("2 differences from the goldens")
    assert [line.split(" = ")[0] for line in err[1:]] == ["  01_a: a", "  01_a: b"]
