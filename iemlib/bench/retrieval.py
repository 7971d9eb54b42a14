"""``map``: mAP@all of structured codes, DeepHash-pytorch's ``CalcTopMap`` in numpy against
``retrieval.mean_average_precision``; the values must agree."""

from __future__ import annotations

import statistics
from typing import Callable

import numpy as np
import torch

from ..retrieval import mean_average_precision
from ..seeding import generator
from .sizes import Sizes
from .timing import interleaved, ratio

MAP_ATOL = 1e-12                           # float64 sums in another order
CODE_FLIP = 0.25                           # synthetic codes: chance that a bit leaves its centre


def structured_codes(n: int, bits: int, classes: int,
                     g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """±1 codes (float32) near one random centre a class, and their class labels."""
    centres = torch.randint(0, 2, (classes, bits), generator=g).float() * 2 - 1
    labels = torch.randint(classes, (n,), generator=g)
    flips = torch.rand(n, bits, generator=g) < CODE_FLIP
    return torch.where(flips, -centres[labels], centres[labels]), labels


def reference_map(qB: np.ndarray, rB: np.ndarray, queryL: np.ndarray,
                  retrievalL: np.ndarray) -> float:
    """DeepHash-pytorch's CalcTopMap at topk = N: one-hot labels, a loop over queries, Hamming
    by numpy dot, a stable argsort (ties by database index), AP from the cumulative hits."""
    num_query, num_db = queryL.shape[0], retrievalL.shape[0]
    ranks = np.arange(1, num_db + 1, dtype=np.float64)
    topkmap = 0.0
    for i in range(num_query):
        gnd = (np.dot(queryL[i, :], retrievalL.transpose()) > 0).astype(np.float64)
        hamm = 0.5 * (rB.shape[1] - np.dot(qB[i, :], rB.transpose()))
        gnd = gnd[np.argsort(hamm, kind="stable")]
        hits = np.cumsum(gnd)
        if hits[-1] == 0:
            continue
        topkmap += float(np.sum(hits / ranks * gnd) / hits[-1])
    return topkmap / num_query


def one_hot(labels: torch.Tensor, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels.numpy()]


def map_pair(queries: int, database: int, bits: int, classes: int,
             device: torch.device) -> dict[str, Callable[[], float]]:
    """The baseline and the library's mAP@all on one set of structured codes."""
    codes, labels = structured_codes(queries + database, bits, classes, generator(0, "bench", bits))
    q, db, ql, dl = codes[:queries], codes[queries:], labels[:queries], labels[queries:]
    arrays = (q.numpy(), db.numpy(), one_hot(ql, classes), one_hot(dl, classes))
    on_device = [t.to(device) for t in (q, db, ql, dl)]
    return {"baseline": lambda: reference_map(*arrays),
            "ours": lambda: mean_average_precision(*on_device, topk=None)}


def map_benchmark(sizes: Sizes, device: torch.device) -> dict:
    result: dict = {"queries": sizes.queries, "database": sizes.database, "by_bits": {}}
    for bits in sizes.bits:
        runs = map_pair(sizes.queries, sizes.database, bits, 10, device)
        values = {name: run() for name, run in runs.items()}
        seconds = interleaved(runs, sizes.repeats, device)
        result["by_bits"][str(bits)] = {
            "map_baseline": values["baseline"], "map_ours": values["ours"],
            "abs_diff": abs(values["baseline"] - values["ours"]),
            "seconds_baseline": statistics.median(seconds["baseline"]),
            "seconds_ours": statistics.median(seconds["ours"]),
            "speedup": ratio(seconds["baseline"], seconds["ours"]), "timings": seconds}
    by_bits = result["by_bits"].values()
    result["max_abs_diff"] = max(r["abs_diff"] for r in by_bits)
    result["speedup"] = min(r["speedup"] for r in by_bits)
    result["check"] = {"max_abs_diff": result["max_abs_diff"], "atol": MAP_ATOL,
                       "ok": result["max_abs_diff"] <= MAP_ATOL}
    return result
