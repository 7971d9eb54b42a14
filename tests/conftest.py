"""Shared fixtures: tiny real CIFAR-10 slices and the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: more threads would thrash

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# tests/book checks a built book in Chromium; `make test-browser` runs it after building one.
collect_ignore = ["book"]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root: $IEMLIB_DATA, else ../shared/data beside the checkout."""
    root = Path(os.environ.get("IEMLIB_DATA", SHARED_DATA))
    if not (root / "cifar-10-batches-bin").is_dir() and not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"CIFAR-10 not found under {root}")
    return root


@pytest.fixture(scope="session")
def tiny_protocol(data_root):
    """Real CIFAR-10, 5 queries, 30 database and 20 training images a class."""
    from iemlib.data import load_protocol

    return load_protocol("cifar10", root=data_root, seed=0, query_per_class=5,
                         train_per_class=20, database_per_class=30)
