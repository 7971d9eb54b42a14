"""Hamming-ranking retrieval metrics for ±1 hash codes.

Conventions follow DHD / DeepHash-pytorch: the database is ranked per query by
Hamming distance, ties broken by ascending database index, and a query with no
relevant item in its top k scores AP = 0 and still counts in the mean.

Codes are ``N x K`` tensors with entries in ``{-1, +1}`` (any numeric dtype).
Labels are either class indices (1-D integer, ``N``) or multi-hot (2-D, ``N x C``,
nonzero = has label); two items are relevant when they share at least one label.
All heavy functions process queries in chunks of ``chunk_size`` so memory stays
bounded at ``O(chunk_size * N)``. Rankings run on bit-packed codes through
:mod:`iemlib.kernels` (Triton on CUDA, a radix sort on CPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import kernels  # kernels imports this module's validation helpers

__all__ = [
    "hamming_distance",
    "rank_database",
    "relevance",
    "mean_average_precision",
    "precision_at_k",
    "precision_curve",
    "precision_recall_curve",
]

DEFAULT_CHUNK_SIZE = 128


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _check_codes(codes: Tensor, name: str) -> None:
    if not isinstance(codes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N x K), got shape {tuple(codes.shape)}")
    if codes.dtype == torch.bool or not bool(((codes == 1) | (codes == -1)).all()):
        raise ValueError(f"{name} must contain only +1/-1 values")


def _check_code_pair(query_codes: Tensor, db_codes: Tensor) -> None:
    _check_codes(query_codes, "query_codes")
    _check_codes(db_codes, "db_codes")
    if query_codes.shape[1] != db_codes.shape[1]:
        raise ValueError(
            f"code length mismatch: query_codes has K={query_codes.shape[1]}, "
            f"db_codes has K={db_codes.shape[1]}"
        )


def _check_labels(query_labels: Tensor, db_labels: Tensor) -> None:
    for name, lab in (("query_labels", query_labels), ("db_labels", db_labels)):
        if not isinstance(lab, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(lab).__name__}")
        if lab.dim() not in (1, 2):
            raise ValueError(
                f"{name} must be 1-D class indices or 2-D multi-hot, got shape {tuple(lab.shape)}"
            )
        if lab.dim() == 1 and (lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool):
            raise ValueError(f"{name} is 1-D so must hold integer class indices, got {lab.dtype}")
    if query_labels.dim() != db_labels.dim():
        raise ValueError(
            "query_labels and db_labels must be the same kind (both 1-D class indices "
            f"or both 2-D multi-hot), got {query_labels.dim()}-D and {db_labels.dim()}-D"
        )
    if query_labels.dim() == 2 and query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(
            f"multi-hot class count mismatch: query_labels has C={query_labels.shape[1]}, "
            f"db_labels has C={db_labels.shape[1]}"
        )


def _check_all(
    query_codes: Tensor, db_codes: Tensor, query_labels: Tensor, db_labels: Tensor
) -> None:
    _check_code_pair(query_codes, db_codes)
    _check_labels(query_labels, db_labels)
    _check_counts(query_codes.shape[0], db_codes.shape[0], query_labels, db_labels)


def _check_counts(n_query: int, n_db: int, query_labels: Tensor, db_labels: Tensor) -> None:
    if n_query != query_labels.shape[0]:
        raise ValueError(
            f"query count mismatch: {n_query} query codes but {query_labels.shape[0]} query labels"
        )
    if n_query == 0 or n_db == 0:
        raise ValueError("need at least one query and one database item")
    if n_db != db_labels.shape[0]:
        raise ValueError(
            f"database count mismatch: {n_db} database codes "
            f"but {db_labels.shape[0]} database labels"
        )


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


# --------------------------------------------------------------------------- #
# unchecked kernels (inputs already validated)
# --------------------------------------------------------------------------- #
def _hamming(query_codes: Tensor, db_codes: Tensor) -> Tensor:
    """(K - q·dbᵀ)/2 as int64; float32 matmul is exact for K < 2**24."""
    k = query_codes.shape[1]
    inner = query_codes.to(torch.float32) @ db_codes.to(torch.float32).T
    return ((k - inner) / 2).round().to(torch.int64)


def _relevance(query_labels: Tensor, db_labels: Tensor) -> Tensor:
    if query_labels.dim() == 1:
        return query_labels[:, None] == db_labels[None, :]
    q = (query_labels != 0).to(torch.float32)
    d = (db_labels != 0).to(torch.float32)
    return (q @ d.T) > 0


def _ranked_relevance(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> Tensor:
    """Relevance (bool, Q x k) of each query's top-k database items in rank order."""
    order = kernels.hamming_topk(query_packed, db_packed, k)
    return torch.gather(_relevance(query_labels, db_labels), 1, order)


def _chunks(n: int, chunk_size: int) -> range:
    return range(0, n, chunk_size)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def hamming_distance(query_codes: Tensor, db_codes: Tensor) -> Tensor:
    """Pairwise Hamming distances (Q x N, int64) between ±1 codes."""
    _check_code_pair(query_codes, db_codes)
    return _hamming(query_codes, db_codes)


def rank_database(
    query_codes: Tensor, db_codes: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """Database indices (Q x N, int64) by ascending Hamming distance, ties by index."""
    _check_code_pair(query_codes, db_codes)
    _check_chunk_size(chunk_size)
    n_db = db_codes.shape[0]
    out = torch.empty((query_codes.shape[0], n_db), dtype=torch.int64, device=db_codes.device)
    if n_db == 0:
        return out
    query_packed, db_packed = kernels._pack(query_codes), kernels._pack(db_codes)
    for s in _chunks(query_codes.shape[0], chunk_size):
        sl = slice(s, s + chunk_size)
        out[sl] = kernels.hamming_topk(query_packed[sl], db_packed, n_db)
    return out


def relevance(query_labels: Tensor, db_labels: Tensor) -> Tensor:
    """Bool Q x N matrix: True where query and database item share a label."""
    _check_labels(query_labels, db_labels)
    return _relevance(query_labels, db_labels)


def mean_average_precision(
    query_codes: Tensor,
    db_codes: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    topk: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """mAP@topk under Hamming ranking (DHD / DeepHash-pytorch convention).

    AP@k of a query is the mean, over the relevant items in its top k, of the
    precision at each of their ranks; it is 0 when the top k holds no relevant
    item, and such queries still count. ``topk=None`` or ``topk > N`` uses the
    whole database; ``topk < 1`` raises ValueError.
    """
    _check_all(query_codes, db_codes, query_labels, db_labels)
    _check_chunk_size(chunk_size)
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    n_query, n_db = query_codes.shape[0], db_codes.shape[0]
    k = n_db if topk is None else min(topk, n_db)
    query_packed, db_packed = kernels._pack(query_codes), kernels._pack(db_codes)
    total = 0.0
    for s in _chunks(n_query, chunk_size):
        sl = slice(s, s + chunk_size)
        # equal, to the last bit, to summing hits / ranks * rel of the sorted relevance
        sums, hits = kernels._ap_sums(query_packed[sl], db_packed, query_labels[sl], db_labels, k)
        ap = sums / hits.clamp(min=1.0)
        total += float(ap.sum())
    return total / n_query


def precision_at_k(
    query_codes: Tensor,
    db_codes: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Mean over queries of (#relevant in top k) / k under Hamming ranking.

    ``k > N`` is clamped to N; ``k < 1`` raises ValueError.
    """
    return precision_curve(query_codes, db_codes, query_labels, db_labels, [k],
                           chunk_size=chunk_size)[0]


def precision_curve(
    query_codes: Tensor,
    db_codes: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    ks: Sequence[int],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[float]:
    """``precision_at_k`` at every k of ``ks``, from one ranking of the database."""
    _check_all(query_codes, db_codes, query_labels, db_labels)
    _check_chunk_size(chunk_size)
    if not ks or min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    n_query, n_db = query_codes.shape[0], db_codes.shape[0]
    clamped = [min(k, n_db) for k in ks]
    query_packed, db_packed = kernels._pack(query_codes), kernels._pack(db_codes)
    hits = torch.zeros(len(ks), dtype=torch.float64)
    for s in _chunks(n_query, chunk_size):
        sl = slice(s, s + chunk_size)
        rel = _ranked_relevance(query_packed[sl], db_packed, query_labels[sl], db_labels,
                                max(clamped))
        found = rel.to(torch.float64).cumsum(dim=1).sum(dim=0).cpu()
        hits += found[torch.tensor(clamped) - 1]
    return [float(h) / (k * n_query) for h, k in zip(hits, clamped)]


def precision_recall_curve(
    query_codes: Tensor,
    db_codes: Tensor,
    query_labels: Tensor,
    db_labels: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """Precision and recall (float64, length K+1) at Hamming radius r = 0..K.

    At radius r a query retrieves the items with distance <= r. Precision is
    averaged only over queries that retrieve at least one item (0 if none do);
    recall is averaged only over queries with at least one relevant item in the
    database (0 if none have one), so recall at r = K is 1.
    """
    _check_all(query_codes, db_codes, query_labels, db_labels)
    _check_chunk_size(chunk_size)
    n_bits = query_codes.shape[1]
    device = db_codes.device
    zeros = lambda: torch.zeros(n_bits + 1, dtype=torch.float64, device=device)  # noqa: E731
    prec_sum, prec_cnt, rec_sum = zeros(), zeros(), zeros()
    rec_cnt = 0
    for s in _chunks(query_codes.shape[0], chunk_size):
        sl = slice(s, s + chunk_size)
        dist = _hamming(query_codes[sl], db_codes)
        rel = _relevance(query_labels[sl], db_labels).to(torch.float64)
        hist = torch.zeros(dist.shape[0], n_bits + 1, dtype=torch.float64, device=device)
        retrieved = hist.scatter_add(1, dist, torch.ones_like(rel)).cumsum(dim=1)
        rel_retrieved = hist.scatter_add(1, dist, rel).cumsum(dim=1)
        has_ret = retrieved > 0
        prec_sum += torch.where(has_ret, rel_retrieved / retrieved.clamp(min=1.0), 0.0).sum(0)
        prec_cnt += has_ret.sum(0)
        n_rel = rel.sum(dim=1, keepdim=True)
        has_rel = n_rel[:, 0] > 0
        rec_sum += (rel_retrieved[has_rel] / n_rel[has_rel]).sum(0)
        rec_cnt += int(has_rel.sum())
    precision = prec_sum / prec_cnt.clamp(min=1.0)
    recall = rec_sum / max(rec_cnt, 1)
    return precision, recall
