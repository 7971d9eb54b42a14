"""Tests for iemlib.kernels against independent references.

References: pure-Python bit packing and Hamming ranking, ``torch.sort(stable=True)``
on the float distances of :mod:`iemlib.retrieval`, and retrieval's mAP. The Triton
kernels run on CPU through Triton's interpreter on tiny inputs, against the torch
backend: triton fixes its interpret mode when imported, so ``test_interpreted_*``
run in a child pytest started with ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from iemlib import kernels, retrieval
from iemlib.kernels import (average_precision, backend, hamming, hamming_topk, pack_codes,
                            unpack_codes)


def _codes(n: int, n_bits: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, n_bits), generator=g).to(torch.float32) * 2 - 1


def _problem(n_query: int, n_db: int, n_bits: int, kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qc, dc = _codes(n_query, n_bits, g), _codes(n_db, n_bits, g)
    if kind == "class":
        ql = torch.randint(0, 4, (n_query,), generator=g)
        dl = torch.randint(0, 4, (n_db,), generator=g)
        ql[0] = 99  # no relevant item anywhere
    else:
        ql = (torch.rand(n_query, 5, generator=g) < 0.3).to(torch.int64)
        dl = (torch.rand(n_db, 5, generator=g) < 0.3).to(torch.int64)
        ql[0] = 0
    return qc, dc, ql, dl


INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETING, reason="run by test_triton_kernels_under_the_interpreter in a child process"
)


@pytest.fixture(autouse=True)
def _no_backend_override(monkeypatch):
    monkeypatch.delenv(kernels.BACKEND_ENV, raising=False)


# --------------------------------------------------------------------------- #
# packing
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n_bits", [1, 5, 31, 32, 33, 40, 64, 100])
def test_pack_layout_and_round_trip(n_bits: int) -> None:
    codes = _codes(9, n_bits, torch.Generator().manual_seed(n_bits))
    packed = pack_codes(codes)
    words = -(-n_bits // 32)
    assert packed.dtype == torch.int32 and packed.shape == (9, words)
    expected = [
        [sum(1 << j for j in range(32) if 32 * w + j < n_bits and row[32 * w + j] > 0)
         for w in range(words)]
        for row in codes.tolist()
    ]  # unused high bits stay 0
    assert (packed.to(torch.int64) & 0xFFFFFFFF).tolist() == expected
    assert torch.equal(unpack_codes(packed, n_bits), codes)
    assert torch.equal(pack_codes(codes.to(torch.int8)), packed)


def test_pack_hand_examples() -> None:
    assert pack_codes(torch.tensor([[1, -1, 1]])).tolist() == [[5]]
    assert pack_codes(torch.ones(1, 32)).tolist() == [[-1]]  # all 32 bits set
    assert pack_codes(-torch.ones(2, 33)).tolist() == [[0, 0], [0, 0]]


def test_pack_and_unpack_bad_input() -> None:
    with pytest.raises(ValueError, match="torch.Tensor"):
        pack_codes([[1, -1]])
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\+1/-1"):
        pack_codes(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\+1/-1"):
        pack_codes(torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="at least one bit"):
        pack_codes(torch.ones(3, 0))
    packed = pack_codes(torch.ones(2, 40))
    for bad in (0, 65):
        with pytest.raises(ValueError, match="n_bits"):
            unpack_codes(packed, bad)
    with pytest.raises(ValueError, match="int32"):
        unpack_codes(packed.to(torch.int64), 40)


# --------------------------------------------------------------------------- #
# Hamming distances
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n_bits, dtype", [(4, torch.uint8), (40, torch.uint8),
                                           (64, torch.uint8), (300, torch.int16)])
def test_hamming_matches_retrieval(n_bits: int, dtype: torch.dtype) -> None:
    qc, dc, _, _ = _problem(11, 57, n_bits, "class")
    qp, dp = pack_codes(qc), pack_codes(dc)
    expected = retrieval.hamming_distance(qc, dc)
    dist = hamming(qp, dp)
    assert dist.dtype == dtype and torch.equal(dist.to(torch.int64), expected)
    swar = kernels._hamming_swar(qp, dp)  # the torch backend off CPU
    assert swar.dtype == dtype and torch.equal(swar.to(torch.int64), expected)


def test_hamming_rejects_bad_packed_codes() -> None:
    packed = pack_codes(torch.ones(3, 40))
    with pytest.raises(ValueError, match="int32"):
        hamming(packed.float(), packed)
    with pytest.raises(ValueError, match="word count"):
        hamming(packed, pack_codes(torch.ones(3, 70)))
    with pytest.raises(ValueError, match="torch.Tensor"):
        hamming(packed, packed.tolist())


# --------------------------------------------------------------------------- #
# stable top-k
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n_bits", [4, 8, 40, 64])
def test_topk_is_the_stable_sort(n_bits: int) -> None:
    qc, dc, _, _ = _problem(13, 300, n_bits, "class", seed=n_bits)  # K = 4: 5 distances, 300 items
    order = torch.sort(retrieval.hamming_distance(qc, dc), dim=1, stable=True).indices
    qp, dp = pack_codes(qc), pack_codes(dc)
    for k in (1, 7, 300, 305):
        got = hamming_topk(qp, dp, k)
        assert got.dtype == torch.int64 and torch.equal(got, order[:, :k]), k


def test_topk_ties_by_index_hand_example() -> None:
    q = pack_codes(torch.tensor([[1, 1]]))
    db = pack_codes(torch.tensor([[-1, -1], [1, -1], [-1, 1], [1, 1]]))
    assert hamming_topk(q, db, 4).tolist() == [[3, 1, 2, 0]]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            hamming_topk(q, db, bad)


# --------------------------------------------------------------------------- #
# average precision
# --------------------------------------------------------------------------- #
def _ref_ap(qc, dc, ql, dl, k: int) -> list[float]:
    """Brute-force AP@k a query, ranking by (distance, index)."""
    out = []
    for q, lq in zip(qc.tolist(), ql.tolist()):
        dist = [sum(a != b for a, b in zip(q, d)) for d in dc.tolist()]
        order = sorted(range(len(dist)), key=lambda j: (dist[j], j))[:k]
        hits, precisions = 0, []
        for rank, j in enumerate(order, start=1):
            ld = dl[j].tolist()
            if (lq == ld) if isinstance(lq, int) else any(a and b for a, b in zip(lq, ld)):
                hits += 1
                precisions.append(hits / rank)
        out.append(sum(precisions) / len(precisions) if precisions else 0.0)
    return out


@pytest.mark.parametrize("kind", ["class", "multihot"])
@pytest.mark.parametrize("n_bits", [4, 40])
def test_average_precision_matches_retrieval_and_bruteforce(kind: str, n_bits: int) -> None:
    qc, dc, ql, dl = _problem(17, 90, n_bits, kind)
    qp, dp = pack_codes(qc), pack_codes(dc)
    for topk in (1, 7, None):
        k = topk or 90
        ap = average_precision(qp, dp, ql, dl, k)
        assert ap.dtype == torch.float64 and ap.shape == (17,)
        assert ap.tolist() == pytest.approx(_ref_ap(qc, dc, ql, dl, k), abs=1e-12)
        expected = retrieval.mean_average_precision(qc, dc, ql, dl, topk=topk)
        assert float(ap.mean()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kind", ["class", "multihot"])
def test_cpu_path_equals_generic_torch_path_bitwise(kind: str) -> None:
    # 17 queries: CPU sum steps of 8, 8 and 1 rows; the generic path sums all 17 at once
    qc, dc, ql, dl = _problem(17, 120, 5, kind, seed=4)
    qp, dp = pack_codes(qc), pack_codes(dc)
    for k in (3, 120):
        sums, hits = kernels._ap_sums_cpu(qp, dp, ql, dl, k)
        precisions, ref_hits = kernels._precisions_torch(qp, dp, ql, dl, k)
        assert torch.equal(sums, precisions.sum(dim=1)) and torch.equal(hits, ref_hits)


@pytest.mark.parametrize("kind", ["class", "multihot"])
def test_cpu_threads_give_the_single_thread_sums_bitwise(kind: str) -> None:
    # 70k items: torch would split a lone row this long across threads (another order)
    n_db = 70_000
    qc, dc, ql, dl = _problem(17, n_db, 40, kind, seed=5)
    qp, dp = pack_codes(qc), pack_codes(dc)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        precisions, ref_hits = kernels._precisions_torch(qp, dp, ql, dl, n_db)
        ref = precisions.sum(dim=1)
        torch.set_num_threads(3)
        # 1 query; 9 = 8 + 1 on 2 threads; 17 = 8 + 8 + 1 on 3; k cut at 7 too
        for n, workers in ((1, 1), (9, 2), (17, 3)):
            assert kernels._cpu_workers(n) == workers
            sums, hits = kernels._ap_sums_cpu(qp[:n], dp, ql[:n], dl, n_db)
            assert torch.equal(sums, ref[:n]) and torch.equal(hits, ref_hits[:n])
            torch.set_num_threads(1)
            serial = kernels._ap_sums_cpu(qp[:n], dp, ql[:n], dl, 7)
            torch.set_num_threads(3)
            cut = kernels._ap_sums_cpu(qp[:n], dp, ql[:n], dl, 7)
            assert torch.equal(cut[0], serial[0]) and torch.equal(cut[1], serial[1])
            assert torch.get_num_threads() == 3  # restored after the call
    finally:
        torch.set_num_threads(threads)


def test_average_precision_bad_input() -> None:
    qc, dc, ql, dl = _problem(4, 10, 8, "class")
    qp, dp = pack_codes(qc), pack_codes(dc)
    with pytest.raises(ValueError, match="query count"):
        average_precision(qp, dp, ql[:3], dl, 5)
    with pytest.raises(ValueError, match="database count"):
        average_precision(qp, dp, ql, dl[:9], 5)
    with pytest.raises(ValueError, match="same kind"):
        average_precision(qp, dp, ql, torch.eye(10), 5)
    with pytest.raises(ValueError, match="k must be"):
        average_precision(qp, dp, ql, dl, 0)


# --------------------------------------------------------------------------- #
# dispatch
# --------------------------------------------------------------------------- #
def test_backend_choice_and_override(monkeypatch) -> None:
    cpu = torch.zeros(1)
    cuda = SimpleNamespace(is_cuda=True)
    assert backend(cpu) == "torch"
    monkeypatch.setattr(kernels, "_triton_available", lambda: True)
    monkeypatch.setattr(kernels, "_interpreting", lambda: False)
    assert backend(cuda, cuda) == "triton"
    assert backend(cuda, cpu) == "torch"  # all tensors must be on CUDA
    monkeypatch.setenv(kernels.BACKEND_ENV, "torch")
    assert backend(cuda) == "torch"
    monkeypatch.setenv(kernels.BACKEND_ENV, "auto")
    assert backend(cuda) == "triton" and backend(cpu) == "torch"
    monkeypatch.setenv(kernels.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=kernels.BACKEND_ENV):
        backend(cpu)
    monkeypatch.setattr(kernels, "_triton_available", lambda: False)
    monkeypatch.setenv(kernels.BACKEND_ENV, "")
    assert backend(cuda) == "torch"  # no triton: torch even on CUDA
    monkeypatch.setenv(kernels.BACKEND_ENV, "triton")
    with pytest.raises(RuntimeError, match="cannot be imported"):
        backend(cuda)


@pytest.mark.skipif(INTERPRETING, reason="needs triton imported without the interpreter")
def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch) -> None:
    triton = pytest.importorskip("triton")
    monkeypatch.setenv(kernels.BACKEND_ENV, "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backend(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # too late: triton is imported
    with pytest.raises(RuntimeError, match="after triton was imported"):
        backend(torch.zeros(1))
    monkeypatch.delenv("TRITON_INTERPRET")
    assert isinstance(kernels._hamming_kernel.jitted, triton.runtime.JITFunction)


# --------------------------------------------------------------------------- #
# Triton kernels, interpreted on CPU
# --------------------------------------------------------------------------- #
def test_triton_kernels_under_the_interpreter() -> None:
    if INTERPRETING:
        pytest.skip("this process interprets: the interpreted tests run here")
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop(kernels.BACKEND_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted",
         str(Path(__file__).resolve())],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert int(re.search(r"(\d+) passed", proc.stdout).group(1)) == 3, proc.stdout[-2000:]


def _with_backend(monkeypatch, name: str, fn):
    monkeypatch.setenv(kernels.BACKEND_ENV, name)
    return fn()


@needs_interpreter
def test_interpreted_kernels_are_interpreted(monkeypatch) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    monkeypatch.setenv(kernels.BACKEND_ENV, "triton")
    assert backend(torch.zeros(1)) == "triton"
    assert isinstance(kernels._rank_kernel.jitted, InterpretedFunction)


@needs_interpreter
@pytest.mark.parametrize("n_bits", [5, 40])
def test_interpreted_kernels_match_torch(monkeypatch, n_bits: int) -> None:
    # 300 items: blocks of 256 (5 bits) or 128 (40 bits), the last one partial
    qc, dc, ql, dl = _problem(5, 300, n_bits, "class", seed=n_bits)
    _, _, qm, dm = _problem(5, 300, n_bits, "multihot", seed=n_bits)
    qp, dp = pack_codes(qc), pack_codes(dc)

    def run():
        return (hamming(qp, dp), [hamming_topk(qp, dp, k) for k in (1, 9, 300)],
                kernels._ap_sums(qp, dp, ql, dl, 20), kernels._ap_sums(qp, dp, qm, dm, 300),
                average_precision(qp, dp, ql, dl, 7), average_precision(qp, dp, qm, dm, 300),
                retrieval.mean_average_precision(qc, dc, ql, dl, topk=7, chunk_size=2))

    got, ref = _with_backend(monkeypatch, "triton", run), _with_backend(monkeypatch, "torch", run)
    assert got[0].dtype == ref[0].dtype and torch.equal(got[0], ref[0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], ref[1]))
    for a, b in zip(got[2:4], ref[2:4]):  # dense mode + torch sums: bit-identical
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(got[4:6], ref[4:6]):  # fused AP: another summation order
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert got[6] == ref[6]
