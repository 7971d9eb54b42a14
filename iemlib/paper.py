"""The paper's own numbers (Feng et al., IEM), kept as data so the book can set ours beside them.

Table I: mAP (%) of DHD trained on each condensed set. Table II: IEM ablation (mAP %).
"""

from __future__ import annotations

TABLE1_METHODS = ("random", "dm", "dsa", "idc", "iem", "whole")

# (dataset, ipc, bits) -> mAP % for each method in TABLE1_METHODS order
_TABLE1_ROWS = {
    ("cifar10", 1, 32): (14.83, 18.46, 15.12, 23.67, 24.21, 68.15),
    ("cifar10", 1, 64): (15.35, 18.62, 15.73, 24.65, 25.82, 70.21),
    ("cifar10", 10, 32): (22.99, 29.95, 27.23, 38.92, 45.32, 68.15),
    ("cifar10", 10, 64): (23.54, 30.23, 28.32, 40.32, 45.85, 70.21),
    ("cifar10", 50, 32): (35.47, 41.12, 39.83, 46.78, 55.72, 68.15),
    ("cifar10", 50, 64): (38.82, 43.43, 40.58, 46.21, 57.49, 70.21),
    ("imagenet10", 1, 32): (16.46, 19.84, 18.63, 37.21, 38.32, 63.87),
    ("imagenet10", 1, 64): (17.62, 20.43, 18.42, 39.55, 40.32, 66.05),
    ("imagenet10", 3, 32): (20.48, 21.95, 20.93, 45.78, 48.69, 63.87),
    ("imagenet10", 3, 64): (21.22, 24.10, 21.78, 48.14, 52.79, 66.05),
    ("imagenet20", 1, 32): (10.47, 10.22, 10.94, 24.89, 24.23, 52.05),
    ("imagenet20", 1, 64): (10.14, 11.22, 10.84, 26.60, 25.70, 57.18),
    ("imagenet20", 3, 32): (10.88, 12.88, 11.73, 32.89, 33.34, 52.05),
    ("imagenet20", 3, 64): (10.71, 12.96, 11.78, 34.48, 35.12, 57.18),
}

# (dataset, ipc, network augmentation, data augmentation) -> mAP %
TABLE2 = {
    ("cifar10", 50, False, False): 43.22,
    ("cifar10", 50, True, False): 47.99,
    ("cifar10", 50, False, True): 57.73,
    ("cifar10", 50, True, True): 57.88,
    ("imagenet10", 3, False, False): 25.83,
    ("imagenet10", 3, True, False): 30.23,
    ("imagenet10", 3, False, True): 47.63,
    ("imagenet10", 3, True, True): 50.38,
}


def table1(dataset: str, ipc: int, bits: int, method: str) -> float:
    """The paper's Table I entry (mAP %) for one cell."""
    row = _TABLE1_ROWS[(dataset, ipc, bits)]
    return row[TABLE1_METHODS.index(method)]


def table1_rows() -> list[dict]:
    """Table I as a list of flat rows: dataset, ipc, bits, method, map (%)."""
    return [{"dataset": d, "ipc": i, "bits": b, "method": m, "map": v}
            for (d, i, b), row in _TABLE1_ROWS.items() for m, v in zip(TABLE1_METHODS, row)]


def table2_rows(dataset: str | None = None) -> list[dict]:
    """Table II as flat rows (all data sets, or one): dataset, ipc, na, da, map (%)."""
    return [{"dataset": d, "ipc": i, "na": na, "da": da, "map": v}
            for (d, i, na, da), v in TABLE2.items() if dataset in (None, d)]
