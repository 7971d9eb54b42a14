"""Key numbers: what a chapter shows, what travels in the notebook, what is read back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from iemlib.keynumbers import METADATA_KEY, read_key_numbers, show_key_numbers


@pytest.fixture
def shown(tmp_path_factory, monkeypatch):
    """Call show_key_numbers in a real IPython shell; return its one display output."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()

    def show(numbers, **kwargs):
        with capture_output() as captured:
            show_key_numbers(numbers, **kwargs)
        (output,) = captured.outputs
        return output

    return show


def notebook(tmp_path, *cells: list[dict]) -> str:
    """A hand-built executed notebook: one code cell for each list of outputs."""
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# title"},
                  *({"cell_type": "code", "metadata": {}, "source": "", "execution_count": 1,
                     "outputs": outputs} for outputs in cells)]}))
    return path


def key_output(numbers: dict) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": "..."},
            "metadata": {METADATA_KEY: numbers}}


def test_shown_numbers_are_a_rounded_table_and_full_floats_in_the_metadata(shown):
    output = shown({"mAP IEM": np.float32(31.254), "time": torch.tensor(2.0), "n": 3}, digits=1)
    assert output.data == {"text/plain": "mAP IEM  31.3\ntime      2.0\nn         3.0"}
    numbers = output.metadata[METADATA_KEY]
    assert numbers == {"mAP IEM": float(np.float32(31.254)), "time": 2.0, "n": 3.0}
    assert all(type(v) is float for v in numbers.values())  # JSON-ready


@pytest.mark.parametrize("numbers,message", [
    ({"a": float("nan")}, "'a' is not finite"),
    ({"a": 1.0, "b": math.inf}, "'b' is not finite"),
    ({"a": -np.inf}, "'a' is not finite"),
    ({"": 1.0}, "non-empty strings"),
    ({"  ": 1.0}, "non-empty strings"),
    ({3: 1.0}, "non-empty strings"),
    ({"a": "1.5"}, "'a' must be a number"),
    ({"a": True}, "'a' must be a number"),
])
def test_bad_numbers_are_refused_before_anything_is_shown(shown, numbers, message):
    with pytest.raises(ValueError, match=message):
        shown(numbers)


def test_no_numbers_at_all_shows_so_and_stores_an_empty_set(shown, tmp_path):
    output = shown({})  # e.g. a chapter whose records are all missing in this profile
    assert output.data == {"text/plain": "no key numbers"} and output.metadata == {METADATA_KEY: {}}


def test_a_value_that_is_not_a_number_at_all_is_refused(shown):
    with pytest.raises(TypeError):
        shown({"a": [1.0]})


def test_reading_a_hand_built_notebook(tmp_path):
    path = notebook(tmp_path,
                    [{"output_type": "stream", "name": "stdout", "text": "hello\n"}],
                    [key_output({"a": 1.5, "b": 2})],
                    [{"output_type": "error", "ename": "E", "evalue": "", "traceback": []}])
    assert read_key_numbers(path) == {"a": 1.5, "b": 2.0}
    assert notebook(tmp_path, []) and read_key_numbers(tmp_path / "executed.ipynb") == {}


def test_later_cells_win_on_a_repeated_name(tmp_path):
    path = notebook(tmp_path, [key_output({"a": 1.0, "b": 2.0})],
                    [key_output({"a": 10.0, "c": 3.0})])
    assert read_key_numbers(path) == {"a": 10.0, "b": 2.0, "c": 3.0}


def test_what_is_shown_is_what_is_read_back(shown, tmp_path):
    output = shown({"x": 0.1 + 0.2, "y": -7})
    path = notebook(tmp_path, [{"output_type": "display_data", "data": output.data,
                                "metadata": output.metadata}])
    assert read_key_numbers(path) == {"x": 0.1 + 0.2, "y": -7.0}  # not the rounded text
