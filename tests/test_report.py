"""Chapter helpers: Table I beside the paper's, method orderings, tables shown twice over."""

from __future__ import annotations

import itertools
import json

import pytest

from iemlib.experiment import Config, record_path
from iemlib.paper import TABLE1_METHODS, table1
from iemlib import report
from iemlib.report import concordant_pairs, method_order, show_table, table1_comparison


def test_method_order_best_first_skipping_missing():
    assert method_order({"random": 20.0, "dm": None, "iem": 35.0, "dsa": 27.5}) == ["iem", "dsa", "random"]
    assert method_order({"a": 1.0, "b": 1.0}) == ["a", "b"]
    assert method_order({}) == []


@pytest.mark.parametrize("ours, theirs, expected", [
    ({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30}, (3, 3)),
    ({"a": 1, "b": 2, "c": 3}, {"a": 30, "b": 20, "c": 10}, (0, 3)),
    ({"a": 1, "b": 2, "c": None}, {"a": 1, "b": 2, "c": 3}, (1, 1)),
    ({"a": 1, "b": 1}, {"a": 1, "b": 2}, (0, 1)),        # a tie is not an agreement
    ({"a": 1}, {"b": 1}, (0, 0)),
])
def test_concordant_pairs_by_hand(ours, theirs, expected):
    assert concordant_pairs(ours, theirs) == expected


def test_concordant_pairs_matches_positions_in_the_two_orderings():
    ours = {"random": 22.9, "dm": 29.0, "dsa": 27.9, "idc": 30.0, "iem": 35.3}
    theirs = {m: table1("cifar10", 10, 32, m) for m in ours}
    a, b = method_order(ours), method_order(theirs)
    alike = sum((a.index(x) < a.index(y)) == (b.index(x) < b.index(y))
                for x, y in itertools.combinations(ours, 2))
    assert concordant_pairs(ours, theirs) == (alike, 10)


def write(config: Config, results, map_at_1000: float) -> None:
    path = record_path(config.resolved(), results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"map": map_at_1000 / 2, "map_at_1000": map_at_1000}}))


def test_table1_comparison_reads_records_and_leaves_the_rest_empty(tmp_path):
    write(Config(method="dm", ipc=1, bits=32, profile="smoke"), tmp_path, 0.25)
    rows = table1_comparison("smoke", results_dir=tmp_path)
    assert len(rows) == 3 * 2 * len(TABLE1_METHODS)            # every CIFAR-10 cell of the paper
    (dm,) = [r for r in rows if (r["ipc"], r["bits"], r["method"]) == (1, 32, "dm")]
    assert dm["ours"] == pytest.approx(25.0) and dm["ours_all"] == pytest.approx(12.5)
    assert dm["paper"] == table1("cifar10", 1, 32, "dm")
    assert sum(r["ours"] is not None for r in rows) == 1
    # IEM at 50 images a class needs 200 real images a class; smoke has 50: no record, no error
    (iem,) = [r for r in rows if (r["ipc"], r["bits"], r["method"]) == (50, 32, "iem")]
    assert iem["ours"] is None


def test_table1_comparison_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("IEMLIB_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "mini"
    for split in ("train", "val"):
        (folder / split / "k0").mkdir(parents=True)
    write(Config(dataset="mini", method="iem", ipc=1, bits=32, profile="cpu"), tmp_path, 0.5)
    rows = table1_comparison("cpu", dataset="imagenet10", results_dir=tmp_path, stand_in="mini")
    found = [(r["ipc"], r["bits"], r["method"], r["ours"]) for r in rows if r["ours"] is not None]
    assert found == [(1, 32, "iem", pytest.approx(50.0))]
    assert all(r["dataset"] == "imagenet10" for r in rows)
    assert not any(r["ours"] for r in table1_comparison("cpu", dataset="imagenet10", results_dir=tmp_path))


def test_show_table_plain_text_and_escaped_html(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as captured:
        show_table(["method", "mAP"], [["IEM", "35.3"], ["<b>", 1]], caption="Table I")
    (output,) = captured.outputs
    assert output.data["text/plain"].splitlines() == ["Table I", "method  mAP", "IEM     35.3", "<b>     1"]
    html = output.data["text/html"]
    assert "<caption>Table I</caption>" in html and "<td>&lt;b&gt;</td>" in html
    assert html.count("<tr>") == 3


def test_ensure_records_runs_each_missing_record_once(tmp_path, monkeypatch):
    ran = []

    def fake_run_cached(config, results, **kwargs):
        ran.append(config)
        path = record_path(config.resolved(), results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": {"method": config.method}}))

    monkeypatch.setattr(report, "run_cached", fake_run_cached)
    implicit = Config(method="dm", ipc=1, profile="smoke")
    explicit = Config(method="dm", ipc=1, profile="smoke", iterations=implicit.resolved().iterations)
    other = Config(method="random", ipc=1, profile="smoke")
    records = report.ensure_records([implicit, explicit, other], tmp_path)
    assert [r["config"]["method"] for r in records] == ["dm", "dm", "random"]
    assert len(ran) == 2
    assert report.ensure_records([implicit, other], tmp_path) == records[::2]
    assert len(ran) == 2
