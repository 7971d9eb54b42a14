"""Tests for iemlib.retrieval against brute-force pure-Python references."""

from __future__ import annotations

import pytest
import torch

from iemlib.retrieval import (
    hamming_distance,
    mean_average_precision,
    precision_at_k,
    precision_curve,
    precision_recall_curve,
    rank_database,
    relevance,
)


# --------------------------------------------------------------------------- #
# pure-Python references
# --------------------------------------------------------------------------- #
def _ref_dist(q: list[int], d: list[int]) -> int:
    return sum(a != b for a, b in zip(q, d))


def _ref_relevant(ql, dl) -> bool:
    if isinstance(ql, int):
        return ql == dl
    return any(a and b for a, b in zip(ql, dl))


def _ref_ranking(qc, dc) -> list[int]:
    dist = [_ref_dist(qc, d) for d in dc]
    return sorted(range(len(dc)), key=lambda j: (dist[j], j))


def _ref_map(qcodes, dcodes, qlabels, dlabels, topk) -> float:
    total = 0.0
    for qc, ql in zip(qcodes, qlabels):
        order = _ref_ranking(qc, dcodes)
        if topk is not None:
            order = order[:topk]
        hits, precs = 0, []
        for i, j in enumerate(order, start=1):
            if _ref_relevant(ql, dlabels[j]):
                hits += 1
                precs.append(hits / i)
        total += sum(precs) / len(precs) if precs else 0.0
    return total / len(qcodes)


def _ref_precision_at_k(qcodes, dcodes, qlabels, dlabels, k) -> float:
    total = 0.0
    for qc, ql in zip(qcodes, qlabels):
        order = _ref_ranking(qc, dcodes)[:k]
        total += sum(_ref_relevant(ql, dlabels[j]) for j in order) / k
    return total / len(qcodes)


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
def _codes(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, k), generator=g).to(torch.float32) * 2 - 1


def _problem(kind: str, n_bits: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qc, dc = _codes(30, n_bits, g), _codes(200, n_bits, g)
    if kind == "class":
        ql = torch.randint(0, 5, (30,), generator=g)
        dl = torch.randint(0, 5, (200,), generator=g)
        ql[0] = 99  # a query with no relevant item anywhere
    else:
        ql = (torch.rand(30, 6, generator=g) < 0.2).to(torch.int64)
        dl = (torch.rand(200, 6, generator=g) < 0.2).to(torch.int64)
        ql[0] = 0
    return qc, dc, ql, dl


def _as_lists(qc, dc, ql, dl):
    return qc.int().tolist(), dc.int().tolist(), ql.tolist(), dl.tolist()


# --------------------------------------------------------------------------- #
# mAP
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind", ["class", "multihot"])
@pytest.mark.parametrize("n_bits", [4, 8])
def test_map_matches_bruteforce(kind: str, n_bits: int) -> None:
    qc, dc, ql, dl = _problem(kind, n_bits)
    lists = _as_lists(qc, dc, ql, dl)
    for topk in (None, 1, 7, 50, 200, 500):
        got = mean_average_precision(qc, dc, ql, dl, topk=topk)
        assert isinstance(got, float)
        assert got == pytest.approx(_ref_map(*lists, topk), abs=1e-9), topk


def _sort_cumsum_map(qc, dc, ql, dl, topk, chunk_size) -> float:
    """mAP the way retrieval computed it before iemlib.kernels: float Hamming distances,
    torch's stable sort, float64 cumsum over the relevance in rank order."""
    n_db = dc.shape[0]
    k = n_db if topk is None else min(topk, n_db)
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    total = 0.0
    for s in range(0, qc.shape[0], chunk_size):
        q = qc[s : s + chunk_size].to(torch.float32)
        dist = ((qc.shape[1] - q @ dc.to(torch.float32).T) / 2).round().to(torch.int64)
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        rel = torch.gather(relevance(ql[s : s + chunk_size], dl), 1, order).to(torch.float64)
        hits = rel.cumsum(dim=1)
        ap = (hits / ranks * rel).sum(dim=1) / hits[:, -1].clamp(min=1.0)
        total += float(ap.sum())
    return total / qc.shape[0]


@pytest.mark.parametrize("kind", ["class", "multihot"])
@pytest.mark.parametrize("n_bits", [3, 8])
def test_map_is_bit_identical_to_the_sort_cumsum_formulation(kind: str, n_bits: int) -> None:
    # 3 bits: 4 distances over 200 items, so almost every rank is decided by a tie
    qc, dc, ql, dl = _problem(kind, n_bits, seed=6)
    lists = _as_lists(qc, dc, ql, dl)
    for topk in (None, 1, 7, 50):
        ref = _ref_map(*lists, topk)  # per-query brute force
        for chunk_size in (1, 7, 17, 128):
            got = mean_average_precision(qc, dc, ql, dl, topk=topk, chunk_size=chunk_size)
            assert got == _sort_cumsum_map(qc, dc, ql, dl, topk, chunk_size), (topk, chunk_size)
            assert got == pytest.approx(ref, abs=1e-12)


def test_map_is_bit_identical_on_a_large_database_with_threads() -> None:
    # >= 32768 items: a lone-row sum may be split across threads; chunks of 1 and 9
    # (a lone last row) exercise how the fast path groups its row sums
    g = torch.Generator().manual_seed(7)
    qc, dc = _codes(19, 6, g), _codes(40_000, 6, g)
    ql, dl = torch.randint(0, 10, (19,), generator=g), torch.randint(0, 10, (40_000,), generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for chunk_size in (1, 9, 128):
            for topk in (None, 1000):
                got = mean_average_precision(qc, dc, ql, dl, topk=topk, chunk_size=chunk_size)
                assert got == _sort_cumsum_map(qc, dc, ql, dl, topk, chunk_size)
    finally:
        torch.set_num_threads(threads)


def test_map_hand_computed_with_tie() -> None:
    # query q = [+1, +1]; db items and Hamming distances:
    #   idx 0: [-1, -1] d=2  irrelevant
    #   idx 1: [+1, -1] d=1  relevant
    #   idx 2: [-1, +1] d=1  irrelevant
    #   idx 3: [+1, +1] d=0  relevant
    # ranking (tie d=1 broken by index 1 < 2): 3, 1, 2, 0
    # relevance in rank order: 1, 1, 0, 0  -> AP = (1/1 + 2/2) / 2 = 1.0
    # If the tie were broken the other way (3, 2, 1, 0): AP = (1/1 + 2/3) / 2.
    # Swap labels of 1 and 2 -> ranking relevance 1, 0, 1, 0 -> AP = (1 + 2/3) / 2.
    q = torch.tensor([[1, 1]])
    db = torch.tensor([[-1, -1], [1, -1], [-1, 1], [1, 1]])
    assert rank_database(q, db).tolist() == [[3, 1, 2, 0]]
    labels = torch.tensor([0, 1, 0, 1])
    assert mean_average_precision(q, db, torch.tensor([1]), labels) == pytest.approx(1.0)
    swapped = torch.tensor([0, 0, 1, 1])
    assert mean_average_precision(q, db, torch.tensor([1]), swapped) == pytest.approx(5 / 6)
    # top-2 only: relevance 1, 0 -> AP@2 = 1/1 / 1 = 1.0
    assert mean_average_precision(q, db, torch.tensor([1]), swapped, topk=2) == pytest.approx(1.0)
    # top-1 with the first item irrelevant -> 0
    assert mean_average_precision(q, db, torch.tensor([0]), swapped, topk=1) == 0.0


def test_query_without_relevant_counts_as_zero() -> None:
    q = torch.tensor([[1, 1], [-1, -1]])
    db = torch.tensor([[1, 1], [1, -1]])
    ql = torch.tensor([0, 7])  # query 1's class is absent from the database
    dl = torch.tensor([0, 1])
    # query 0: ranking 0, 1 -> relevance 1, 0 -> AP 1; query 1: AP 0
    assert mean_average_precision(q, db, ql, dl) == pytest.approx(0.5)


def test_topk_larger_than_database_equals_full() -> None:
    qc, dc, ql, dl = _problem("class", 8)
    full = mean_average_precision(qc, dc, ql, dl)
    assert mean_average_precision(qc, dc, ql, dl, topk=10_000) == full
    assert mean_average_precision(qc, dc, ql, dl, topk=200) == full


@pytest.mark.parametrize("kind", ["class", "multihot"])
def test_chunking_does_not_change_result(kind: str) -> None:
    qc, dc, ql, dl = _problem(kind, 8, seed=3)
    for topk in (None, 13):
        ref = mean_average_precision(qc, dc, ql, dl, topk=topk)
        for cs in (1, 7, 1000):
            got = mean_average_precision(qc, dc, ql, dl, topk=topk, chunk_size=cs)
            assert got == pytest.approx(ref, abs=1e-12)
    assert torch.equal(rank_database(qc, dc, chunk_size=4), rank_database(qc, dc))
    p_ref, r_ref = precision_recall_curve(qc, dc, ql, dl)
    p, r = precision_recall_curve(qc, dc, ql, dl, chunk_size=4)
    assert torch.allclose(p, p_ref) and torch.allclose(r, r_ref)
    assert precision_at_k(qc, dc, ql, dl, 9, chunk_size=4) == precision_at_k(qc, dc, ql, dl, 9)


# --------------------------------------------------------------------------- #
# distances, ranking, relevance
# --------------------------------------------------------------------------- #
def test_hamming_and_ranking_match_bruteforce() -> None:
    qc, dc, _, _ = _problem("class", 8)
    qd = torch.tensor([[_ref_dist(q, d) for d in dc.int().tolist()] for q in qc.int().tolist()])
    dist = hamming_distance(qc, dc)
    assert dist.dtype in (torch.int32, torch.int64)
    assert torch.equal(dist, qd.to(dist.dtype))
    # integer and float64 codes give identical distances
    assert torch.equal(hamming_distance(qc.to(torch.int8), dc.double()), dist)
    expected = [_ref_ranking(q, dc.int().tolist()) for q in qc.int().tolist()]
    ranking = rank_database(qc, dc)
    assert ranking.dtype == torch.int64 and ranking.tolist() == expected


def test_relevance_class_and_multihot() -> None:
    rel = relevance(torch.tensor([0, 2]), torch.tensor([2, 0, 0, 1]))
    assert rel.dtype == torch.bool
    assert rel.tolist() == [[False, True, True, False], [True, False, False, False]]
    qm = torch.tensor([[1, 0, 1], [0, 0, 0]])
    dm = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert relevance(qm, dm).tolist() == [[False, True, True], [False, False, False]]


# --------------------------------------------------------------------------- #
# precision@k and PR curve
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind", ["class", "multihot"])
def test_precision_at_k_matches_bruteforce(kind: str) -> None:
    qc, dc, ql, dl = _problem(kind, 4, seed=1)
    lists = _as_lists(qc, dc, ql, dl)
    for k in (1, 5, 37, 200):
        got = precision_at_k(qc, dc, ql, dl, k)
        assert got == pytest.approx(_ref_precision_at_k(*lists, k), abs=1e-12)


def test_precision_curve_matches_bruteforce_at_every_k() -> None:
    qc, dc, ql, dl = _problem("class", 6, seed=3)
    lists = _as_lists(qc, dc, ql, dl)
    ks = [1, 5, 37, 200, 10_000]
    got = precision_curve(qc, dc, ql, dl, ks, chunk_size=3)
    n_db = dc.shape[0]  # k beyond the database is clamped to it
    assert got == pytest.approx([_ref_precision_at_k(*lists, min(k, n_db)) for k in ks], abs=1e-12)
    with pytest.raises(ValueError):
        precision_curve(qc, dc, ql, dl, [0, 5])
    with pytest.raises(ValueError):
        precision_curve(qc, dc, ql, dl, [])


def test_precision_recall_curve_sanity() -> None:
    n_bits = 8
    qc, dc, ql, dl = _problem("class", n_bits, seed=2)
    precision, recall = precision_recall_curve(qc, dc, ql, dl)
    assert precision.shape == recall.shape == (n_bits + 1,)
    assert precision.is_floating_point() and recall.is_floating_point()
    assert bool((recall[1:] >= recall[:-1] - 1e-12).all())
    assert recall[-1].item() == pytest.approx(1.0)
    assert bool(((precision >= 0) & (precision <= 1)).all())
    # at r = K everything is retrieved: precision = mean fraction of relevant items
    frac = relevance(ql, dl).double().mean(dim=1).mean().item()
    assert precision[-1].item() == pytest.approx(frac)


@pytest.mark.parametrize("kind", ["class", "multihot"])
@pytest.mark.parametrize("n_bits", [4, 8])
def test_precision_recall_curve_bruteforce(kind: str, n_bits: int) -> None:
    # with 8 bits some queries retrieve nothing at small radii (excluded from precision)
    qc, dc, ql, dl = _problem(kind, n_bits, seed=5)
    qcl, dcl, qll, dll = _as_lists(qc, dc, ql, dl)
    precision, recall = precision_recall_curve(qc, dc, ql, dl)
    for r in range(n_bits + 1):
        precs, recs = [], []
        for q, lq in zip(qcl, qll):
            ret = [j for j, d in enumerate(dcl) if _ref_dist(q, d) <= r]
            rel_all = sum(_ref_relevant(lq, lj) for lj in dll)
            rel_ret = sum(_ref_relevant(lq, dll[j]) for j in ret)
            if ret:
                precs.append(rel_ret / len(ret))
            if rel_all:
                recs.append(rel_ret / rel_all)
        assert precision[r].item() == pytest.approx(sum(precs) / len(precs) if precs else 0.0)
        assert recall[r].item() == pytest.approx(sum(recs) / len(recs))


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_codes_raise() -> None:
    ok = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(ValueError, match=r"\+1/-1"):
        hamming_distance(torch.tensor([[1.0, 0.0]]), ok)
    with pytest.raises(ValueError, match=r"\+1/-1"):
        hamming_distance(ok, torch.tensor([[0.5, -1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        hamming_distance(torch.tensor([1.0, -1.0]), ok)
    with pytest.raises(ValueError, match="code length"):
        hamming_distance(ok, torch.ones(2, 3))
    with pytest.raises(ValueError, match="code length"):
        rank_database(ok, torch.ones(2, 3))


def test_bad_labels_and_counts_raise() -> None:
    codes = torch.tensor([[1, -1], [-1, 1]])
    cls = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="query count"):
        mean_average_precision(codes, codes, torch.tensor([0]), cls)
    with pytest.raises(ValueError, match="database count"):
        mean_average_precision(codes, codes, cls, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="same kind"):
        mean_average_precision(codes, codes, cls, torch.eye(2))
    with pytest.raises(ValueError, match="class count"):
        relevance(torch.eye(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="1-D"):
        relevance(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="query count"):
        precision_at_k(codes, codes, torch.tensor([0]), cls, 1)
    with pytest.raises(ValueError, match="database count"):
        precision_recall_curve(codes, codes, cls, torch.tensor([0]))


def test_bad_topk_raises() -> None:
    codes = torch.tensor([[1, -1], [-1, 1]])
    cls = torch.tensor([0, 1])
    for bad in (0, -3):
        with pytest.raises(ValueError, match="topk"):
            mean_average_precision(codes, codes, cls, cls, topk=bad)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(codes, codes, cls, cls, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        mean_average_precision(codes, codes, cls, cls, chunk_size=0)


def test_record_metrics_hold_curves_and_a_gallery_that_match_the_references() -> None:
    from iemlib.experiment import GALLERY_TOP, PRECISION_KS, retrieval_metrics

    qc, dc, ql, dl = _problem("class", 8, seed=4)
    metrics = retrieval_metrics(qc, dc, ql, dl)
    lists = _as_lists(qc, dc, ql, dl)
    assert metrics["map"] == pytest.approx(_ref_map(*lists, None), abs=1e-12)
    n_db = dc.shape[0]
    assert list(metrics["precision_at_k"]) == [str(k) for k in PRECISION_KS]
    for k, value in metrics["precision_at_k"].items():
        assert value == pytest.approx(_ref_precision_at_k(*lists, min(int(k), n_db)), abs=1e-12)
    assert metrics["precision_at_100"] == metrics["precision_at_k"]["100"]
    assert len(metrics["pr_curve"]["precision"]) == len(metrics["pr_curve"]["recall"]) == 9
    gallery = metrics["gallery"]
    classes = sorted(set(ql.tolist()))
    assert gallery["queries"] == [ql.tolist().index(c) for c in classes]  # first query a class
    for q, retrieved in zip(gallery["queries"], gallery["retrieved"]):
        assert retrieved == _ref_ranking(lists[0][q], lists[1])[:GALLERY_TOP]
