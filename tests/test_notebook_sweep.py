"""Notebook sweeps: the grid, literal values, executed copies, the summary, skips and failures.

Most tests stand a fake executor in for papermill (it writes what an executed copy holds); the
last ones execute a tiny notebook with papermill through the command line, twice in all.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from iemlib.__main__ import _notebook_parameters, build_parser, main
from iemlib.keynumbers import METADATA_KEY
from iemlib.notebook_sweep import (SUMMARY, copy_name, parameter_grid, parse_value,
                                   summary_table, sweep_notebook)

TINY = '''\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
alpha = 0.1
seed = 0
profile = "cpu"
label = "x"

# %%
from iemlib.keynumbers import show_key_numbers

if alpha < 0:
    raise ValueError("negative alpha")
show_key_numbers({"double": 2 * alpha, "profile letters": len(profile)})
'''


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return path


class FakePapermill:
    """Writes what papermill would: the notebook with one output of key numbers derived from
    the parameters (``double`` = 2 alpha); raises, like a failing cell, when alpha < 0."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, source: Path, output: Path, parameters: dict, cwd: Path) -> None:
        self.calls.append(parameters)
        nb = json.loads(source.read_text())  # the .ipynb jupytext made of the .py source
        nb["cells"][-1]["outputs"] = [{"output_type": "display_data", "data": {},
                                       "metadata": {METADATA_KEY: {"double": 2 * parameters["alpha"]}}}]
        output.write_text(json.dumps(nb))
        if parameters["alpha"] < 0:
            raise RuntimeError("negative alpha")


def summary(out: Path) -> list[dict]:
    with open(out / SUMMARY, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("text,value", [
    ("0.01", 0.01), ("3", 3), ("-1", -1), ("1e-3", 0.001), ("True", True), ("None", None),
    ("(1, 10)", (1, 10)), ("[16, 32]", [16, 32]), ("'0.1'", "0.1"), ("cpu", "cpu"),
    ("cuda:1", "cuda:1"), ("a b", "a b"), ("[1,", "[1,"), ("nan", "nan"),
])
def test_values_are_python_literals_when_they_parse_else_strings(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_the_grid_is_every_combination_in_order():
    combos = parameter_grid({"alpha": [0.01, 0.1], "seed": [0, 1, 2], "profile": ["smoke"]})
    expected = [{"alpha": a, "seed": s, "profile": "smoke"} for a in (0.01, 0.1) for s in (0, 1, 2)]
    assert combos == expected
    assert parameter_grid({}) == [{}]  # no parameters: the notebook once, as it is


@pytest.mark.parametrize("grid,message", [
    ({"alpha": []}, "'alpha' has no values"),
    ({"not a name": [1]}, "not a parameter name"),
])
def test_a_bad_grid_is_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        parameter_grid(grid)


def test_copies_are_named_by_their_parameters():
    assert copy_name("06_ablation", {"alpha": 0.01, "seed": 0}) == "06_ablation-alpha=0.01-seed=0.ipynb"
    assert copy_name("nb", {"label": "a/b c", "ipcs": (1, 10)}) == "nb-label=a_b_c-ipcs=_1,_10_.ipynb"
    assert copy_name("nb", {}) == "nb.ipynb"


def test_a_sweep_writes_a_copy_a_combination_and_records_failures(tiny, tmp_path):
    out, run = tmp_path / "out", FakePapermill()
    runs = sweep_notebook(tiny, {"alpha": [0.25, -1.0], "seed": [0, 1]}, out, progress=False,
                          execute=run)
    assert run.calls == [{"alpha": 0.25, "seed": 0}, {"alpha": 0.25, "seed": 1},
                         {"alpha": -1.0, "seed": 0}, {"alpha": -1.0, "seed": 1}]
    assert [r.status for r in runs] == ["ran", "ran", "failed", "failed"]
    assert runs[0].path == out / "tiny-alpha=0.25-seed=0.ipynb" and runs[0].numbers == {"double": 0.5}
    assert runs[2].path == out / "failed" / "tiny-alpha=-1.0-seed=0.ipynb"
    assert runs[2].error == "RuntimeError: negative alpha" and runs[2].numbers == {}
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["tiny-alpha=0.25-seed=0.ipynb",
                                                           "tiny-alpha=0.25-seed=1.ipynb"]
    assert len(list((out / "failed").glob("*.ipynb"))) == 2
    assert not list((out / "partial").glob("*"))
    assert summary(out) == [
        {"status": "ran", "alpha": "0.25", "seed": "0", "double": "0.5", "error": ""},
        {"status": "ran", "alpha": "0.25", "seed": "1", "double": "0.5", "error": ""},
        {"status": "failed", "alpha": "-1.0", "seed": "0", "double": "", "error": "RuntimeError: negative alpha"},
        {"status": "failed", "alpha": "-1.0", "seed": "1", "double": "", "error": "RuntimeError: negative alpha"},
    ]
    lines = summary_table(runs).splitlines()
    assert lines[0].split() == ["status", "alpha", "seed", "double"]
    assert lines[1].split() == ["ran", "0.25", "0", "0.5"] and lines[3].split() == ["failed", "-1", "0"]


def test_existing_copies_are_skipped_failed_ones_retried_and_force_reruns(tiny, tmp_path):
    out = tmp_path / "out"
    sweep_notebook(tiny, {"alpha": [0.25, -1.0]}, out, progress=False, execute=FakePapermill())
    copy = out / "tiny-alpha=0.25.ipynb"
    before = copy.read_text()

    again = FakePapermill()
    runs = sweep_notebook(tiny, {"alpha": [0.25, -1.0, 2.0]}, out, progress=False, execute=again)
    assert again.calls == [{"alpha": -1.0}, {"alpha": 2.0}]  # the existing copy is not rerun
    assert [r.status for r in runs] == ["skipped", "failed", "ran"]
    assert runs[0].numbers == {"double": 0.5} and copy.read_text() == before
    assert [row["double"] for row in summary(out)] == ["0.5", "", "4.0"]

    forced = FakePapermill()
    runs = sweep_notebook(tiny, {"alpha": [0.25]}, out, force=True, progress=False, execute=forced)
    assert forced.calls == [{"alpha": 0.25}] and runs[0].status == "ran"
    assert len(summary(out)) == 1  # the summary is this sweep's grid only


def test_a_copy_that_fails_when_forced_is_removed_and_a_success_clears_the_failure(tiny, tmp_path):
    out = tmp_path / "out"
    copy, failed = out / "tiny-alpha=0.5.ipynb", out / "failed" / "tiny-alpha=0.5.ipynb"
    sweep_notebook(tiny, {"alpha": [0.5]}, out, progress=False, execute=FakePapermill())

    def broken(source, output, parameters, cwd):
        raise OSError("kernel died")

    (run,) = sweep_notebook(tiny, {"alpha": [0.5]}, out, force=True, progress=False, execute=broken)
    assert run.status == "failed" and run.error == "OSError: kernel died"
    assert not copy.exists() and not failed.exists()  # it wrote nothing: no failed copy either
    sweep_notebook(tiny, {"alpha": [-0.5]}, out, progress=False, execute=FakePapermill())
    assert (out / "failed" / "tiny-alpha=-0.5.ipynb").exists()


def test_repeated_values_run_once_and_clashing_names_are_refused(tiny, tmp_path):
    run = FakePapermill()
    runs = sweep_notebook(tiny, {"alpha": [0.5, 0.50]}, tmp_path, progress=False, execute=run)
    assert len(runs) == 1 and len(run.calls) == 1
    with pytest.raises(ValueError, match="would both be written to tiny-label=a_b.ipynb"):
        sweep_notebook(tiny, {"label": ["a/b", "a b"]}, tmp_path, execute=FakePapermill())


def test_unknown_parameters_stop_the_sweep_before_anything_runs(tiny, tmp_path):
    run = FakePapermill()
    with pytest.raises(ValueError, match=r"has no parameter alpah, sed \(its cell tagged "
                                         r"'parameters' sets: alpha, seed, profile, label\)"):
        sweep_notebook(tiny, {"alpah": [1], "alpha": [1], "sed": [0]}, tmp_path, execute=run)
    no_cell = tmp_path / "plain.py"
    no_cell.write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="sets: nothing"):
        sweep_notebook(no_cell, {"x": [2]}, tmp_path, execute=run)
    assert run.calls == [] and not list(tmp_path.rglob("*.ipynb"))


def test_an_ipynb_is_executed_as_it_is(tiny, tmp_path):
    import jupytext

    ipynb = tmp_path / "given.ipynb"
    jupytext.write(jupytext.read(tiny), ipynb)
    seen = []
    runs = sweep_notebook(ipynb, {"alpha": [1.5]}, tmp_path / "out", progress=False,
                          execute=lambda s, o, p, c: (seen.append(s), FakePapermill()(s, o, p, c)))
    assert seen == [ipynb] and runs[0].numbers == {"double": 3.0}


def test_a_missing_book_extra_is_one_clear_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jupytext", None)  # import jupytext now raises ImportError
    with pytest.raises(ImportError, match=r"need jupytext, from iemlib's \[book\] extra"):
        sweep_notebook(tiny, {"alpha": [1]}, tmp_path, execute=FakePapermill())


def test_key_numbers_named_like_a_parameter_keep_their_own_column(tiny, tmp_path):
    def shows_alpha(source, output, parameters, cwd):
        output.write_text(json.dumps({"cells": [{"outputs": [
            {"metadata": {METADATA_KEY: {"alpha": 7.0, "status": 1.0}}}]}]}))

    sweep_notebook(tiny, {"alpha": [0.5]}, tmp_path, progress=False, execute=shows_alpha)
    assert summary(tmp_path) == [{"status": "ran", "alpha": "0.5", "alpha (key number)": "7.0",
                                  "status (key number)": "1.0", "error": ""}]


def test_command_line_settings_become_notebook_parameters():
    args = build_parser().parse_args(
        ["sweep", "--notebook", "nb.py", "-p", "alphas", "(0.01, 0.1)", "'s'", "-p", "device",
         "cpu", "--profile", "smoke", "--seed", "0", "1", "--results-dir", "/tmp/r"])
    assert _notebook_parameters(args) == {"alphas": [(0.01, 0.1), "s"], "device": ["cpu"],
                                          "profile": ["smoke"], "seed": [0, 1],
                                          "results_dir": ["/tmp/r"]}
    twice = build_parser().parse_args(["sweep", "--notebook", "nb.py", "-p", "seed", "1",
                                       "--seed", "2"])
    with pytest.raises(ValueError, match="seed is given twice"):
        _notebook_parameters(twice)


@pytest.mark.parametrize("args,message", [
    (["-p", "alpha"], "-p alpha needs at least one value"),
    (["-p", "alpah", "1"], "has no parameter alpah"),
    (["--method", "dm"], "has no parameter method"),
])
def test_bad_notebook_sweeps_fail_in_one_line(tiny, tmp_path, capsys, args, message):
    assert main(["sweep", "--notebook", str(tiny), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_notebook_options_need_a_notebook(capsys):
    assert main(["sweep", "-p", "alpha", "1"]) == 2
    assert "give --notebook" in capsys.readouterr().err
    assert main(["sweep", "--notebook", "no/such.py", "-p", "alpha", "1"]) == 2
    assert "no notebook no/such.py" in capsys.readouterr().err


def test_papermill_executes_every_combination_and_a_rerun_skips_them(tiny, tmp_path, capsys,
                                                                      monkeypatch):
    """Two notebook executions: one runs, one fails; the rerun executes nothing."""
    monkeypatch.chdir(tmp_path)  # the default --out is relative to the working directory
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    command = ["sweep", "--notebook", "tiny.py", "--profile", "smoke", "--quiet"]
    assert main([*command, "-p", "alpha", "0.25", "-1"]) == 1
    out = tmp_path / "_build" / "sweeps" / "tiny"
    copy = out / "tiny-alpha=0.25-profile=smoke.ipynb"
    executed = json.loads(copy.read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"alpha": 0.25, "profile": "smoke"}
    assert summary(out) == [
        {"status": "ran", "alpha": "0.25", "profile": "smoke", "double": "0.5",
         "profile letters": "5.0", "error": ""},
        {"status": "failed", "alpha": "-1", "profile": "smoke", "double": "",
         "profile letters": "", "error": "ValueError: negative alpha (In [3])"},
    ]
    failed = json.loads((out / "failed" / "tiny-alpha=-1-profile=smoke.ipynb").read_text())
    assert any(o.get("ename") == "ValueError" for c in failed["cells"] for o in c.get("outputs", []))
    printed = capsys.readouterr()
    assert "1 of 2 runs failed" in printed.err and "negative alpha" in printed.err
    assert printed.out.splitlines()[0].split() == ["status", "alpha", "profile", "double",
                                                   "profile", "letters"]
    assert f"summary: {Path('_build/sweeps/tiny') / SUMMARY}" in printed.out

    assert main([*command, "-p", "alpha", "0.25"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["skipped", "0.25", "smoke", "0.5", "5"]
    assert json.loads(copy.read_text()) == executed


def test_papermill_gets_absolute_paths_the_kernel_name_and_the_working_directory(
        tiny, tmp_path, monkeypatch):
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda source, output, **kw: (calls.append((source, output, kw)),
                                                      Path(output).write_text('{"cells": []}')))
    monkeypatch.chdir(tmp_path)
    (run,) = sweep_notebook("tiny.py", {"alpha": [1]}, "out", cwd="/", progress=False)
    ((source, output, kw),) = calls
    assert Path(source).is_absolute() and source.endswith("tiny.ipynb")
    assert output == str(tmp_path / "out" / "partial" / "tiny-alpha=1.ipynb")
    assert kw == {"parameters": {"alpha": 1}, "kernel_name": "python3", "cwd": "/",
                  "progress_bar": False}
    assert run.status == "ran" and run.path == Path("out/tiny-alpha=1.ipynb") and run.path.exists()
