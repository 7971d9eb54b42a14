"""GPU kernels (Triton) with torch fallbacks for Hamming ranking on bit-packed codes.

Codes are packed by :func:`pack_codes` into int32 words, 32 bits a word (bit ``j``
of word ``w`` is set when bit ``32 w + j`` of the ±1 code is +1; unused high bits
are 0). On packed codes this module computes Hamming distances, the stable Hamming
ranking (ascending distance, ties by ascending database index, as in
:mod:`iemlib.retrieval`) cut at rank k, and average precision at k.

Backends
--------
Every public function dispatches, per call, to one of two implementations that give
identical results (but for the last bits of the fused Triton AP, see
:func:`average_precision`):

* ``triton``: Triton kernels. One computes the distances (xor, SWAR popcount); the
  ranking kernel reads them and ranks by a counting sort, one program a query:
  a histogram of the distances (one bin per distance), its exclusive prefix sum
  (the bucket offsets), then, walking the database in blocks in index order with
  running per-bucket counters, each item's rank = bucket offset + number of earlier
  items in its bucket. AP needs, for each relevant item, its rank and the number of
  relevant items ranked at or before it; both come from the same counters kept
  over all items and over relevant items, so no index is ever sorted.
* ``torch``: torch ops: distances by xor and a SWAR popcount, the ranking by a
  stable sort, AP from the cumulative sum of the relevance in rank order. On CPU
  tensors numpy does the hot loops, measured faster: ``np.bitwise_count`` for the
  popcount, ``np.argsort(kind="stable")`` (a radix sort on the uint8/int16
  distances) for the ranking, and AP one query at a time in reused buffers, on
  ``torch.get_num_threads()`` threads (torch itself kept to one thread meanwhile).

The choice is automatic: ``triton`` when all tensors are on CUDA and triton imports,
``torch`` otherwise. The environment variable ``IEMLIB_KERNELS`` overrides it:
``IEMLIB_KERNELS=torch`` always uses torch; ``IEMLIB_KERNELS=triton`` always uses
Triton (RuntimeError if triton does not import, or if the tensors are not on CUDA
and ``TRITON_INTERPRET`` is off); unset, empty or ``auto`` means automatic.

``TRITON_INTERPRET=1`` runs the Triton kernels on CPU tensors through Triton's
interpreter (slow: for tests). ``triton.jit`` reads that variable when it decorates
a function, and triton.language's own jit helpers (``tl.sum``, ``tl.cumsum``, ...)
are decorated when triton is imported, so the variable must be set before triton is
first imported. This module imports triton only on the first call that needs the
Triton backend, and jits its kernels at their first launch, so setting the variable
before that call is enough unless something else imported triton earlier (a
RuntimeError says so). Tests therefore run the interpreted kernels in a fresh
process.
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from . import retrieval as _retrieval  # validation helpers (retrieval imports this module too)

__all__ = [
    "pack_codes",
    "unpack_codes",
    "hamming",
    "hamming_topk",
    "average_precision",
    "backend",
]

BACKEND_ENV = "IEMLIB_KERNELS"
_WORD_BITS = 32
_CPU_ROWS = 8  # queries a step on CPU (>= 2): keeps a step's N-wide temporaries in cache
_DEVICE_ROWS = 256  # queries a step for the torch backend on other devices

# Bound by _triton_available() on first need; the kernels resolve them as globals.
triton = None
tl = None


# --------------------------------------------------------------------------- #
# dispatch
# --------------------------------------------------------------------------- #
@functools.cache
def _triton_available() -> bool:
    global triton, tl
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    """Whether the imported triton runs kernels in its interpreter (fixed at import)."""
    interpreting = not isinstance(tl.zeros, triton.runtime.JITFunction)
    if interpreting != triton.knobs.runtime.interpret:
        raise RuntimeError("TRITON_INTERPRET changed after triton was imported; set it "
                           "before the first use of the Triton backend")
    return interpreting


def backend(*tensors: Tensor) -> str:
    """The implementation (``"triton"`` or ``"torch"``) a call on ``tensors`` uses.

    Honours ``IEMLIB_KERNELS`` (see the module docstring); raises ValueError for an
    unknown value and RuntimeError when a forced Triton backend cannot run.
    """
    choice = os.environ.get(BACKEND_ENV, "").strip().lower()
    if choice not in ("", "auto", "torch", "triton"):
        raise ValueError(f"{BACKEND_ENV} must be 'torch', 'triton' or 'auto', got {choice!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    if choice == "torch" or (choice != "triton" and not (on_cuda and _triton_available())):
        return "torch"
    if not _triton_available():
        raise RuntimeError(f"{BACKEND_ENV}=triton but triton cannot be imported")
    if not _interpreting() and not on_cuda:
        raise RuntimeError(
            f"{BACKEND_ENV}=triton needs CUDA tensors, or TRITON_INTERPRET=1 to run on CPU"
        )
    return "triton"


class _LazyJit:
    """A Triton kernel jitted at its first launch, when triton is imported and its
    interpret mode known (importing this module imports no triton)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    @functools.cached_property
    def jitted(self) -> Callable:
        return triton.jit(self.fn)

    def __getitem__(self, grid: tuple[int, ...]) -> Callable:
        return self.jitted[grid]


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_packed(query_packed: Tensor, db_packed: Tensor) -> None:
    for name, t in (("query_packed", query_packed), ("db_packed", db_packed)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.dtype != torch.int32:
            raise ValueError(
                f"{name} must be 2-D int32 words from pack_codes, got {t.dtype} {tuple(t.shape)}"
            )
    if query_packed.shape[1] != db_packed.shape[1]:
        raise ValueError(
            f"word count mismatch: query_packed has {query_packed.shape[1]} words a code, "
            f"db_packed has {db_packed.shape[1]}"
        )
    if query_packed.shape[1] == 0:
        raise ValueError("packed codes need at least one word")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")


def _check_ap_inputs(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> None:
    _check_packed(query_packed, db_packed)
    _retrieval._check_labels(query_labels, db_labels)
    _retrieval._check_counts(query_packed.shape[0], db_packed.shape[0], query_labels, db_labels)
    _check_k(k)


# --------------------------------------------------------------------------- #
# packing
# --------------------------------------------------------------------------- #
def _pack(codes: Tensor) -> Tensor:
    """pack_codes without validation (K = 0, reachable via retrieval, gives one 0 word).

    Packed on the host by np.packbits whatever the device (codes are small: one copy each
    way); the words come back on the codes' device.
    """
    return _pack_numpy(codes.cpu()).to(codes.device)


def _pack_numpy(codes: Tensor) -> Tensor:
    """_pack on CPU by np.packbits."""
    n, n_bits = codes.shape
    packed = np.zeros((n, max(1, -(-n_bits // _WORD_BITS)) * 4), dtype=np.uint8)
    packed[:, : -(-n_bits // 8)] = np.packbits((codes > 0).numpy(), axis=1, bitorder="little")
    return torch.from_numpy(packed.view("<i4").astype(np.int32, copy=False))


def pack_codes(codes: Tensor) -> Tensor:
    """Pack ±1 codes (N x K, K >= 1) into int32 words (N x ceil(K/32)); +1 -> bit 1."""
    _retrieval._check_codes(codes, "codes")
    if codes.shape[1] == 0:
        raise ValueError("codes must have at least one bit (K >= 1)")
    return _pack(codes)


def unpack_codes(packed: Tensor, n_bits: int) -> Tensor:
    """Inverse of :func:`pack_codes`: float32 ±1 codes (N x n_bits)."""
    if not isinstance(packed, Tensor) or packed.dim() != 2 or packed.dtype != torch.int32:
        raise ValueError("packed must be a 2-D int32 tensor from pack_codes")
    if not 1 <= n_bits <= packed.shape[1] * _WORD_BITS:
        raise ValueError(f"n_bits must be in 1..{packed.shape[1] * _WORD_BITS}, got {n_bits}")
    shifts = torch.arange(_WORD_BITS, dtype=torch.int32, device=packed.device)
    bits = (packed[:, :, None] >> shifts) & 1
    return bits.reshape(packed.shape[0], -1)[:, :n_bits].to(torch.float32) * 2 - 1


# --------------------------------------------------------------------------- #
# torch backend
# --------------------------------------------------------------------------- #
def _dist_dtype(words: int) -> torch.dtype:
    """Smallest dtype holding distances up to 32 * words."""
    max_dist = words * _WORD_BITS
    return torch.uint8 if max_dist <= 255 else torch.int16 if max_dist <= 32767 else torch.int32


_NP_DTYPES = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}


def _popcount_swar(x: Tensor) -> Tensor:
    """Per-word popcount of int32 words, in place (the arithmetic shifts are masked)."""
    x.sub_((x >> 1).bitwise_and_(0x55555555))
    x = x.bitwise_and(0x33333333).add_((x >> 2).bitwise_and_(0x33333333))
    x.add_(x >> 4).bitwise_and_(0x0F0F0F0F)
    x.add_(x >> 8)
    x.add_(x >> 16)
    return x.bitwise_and_(0x3F)


def _hamming_swar(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    counts = _popcount_swar(query_packed[:, None, :] ^ db_packed[None, :, :])
    return counts.sum(dim=2, dtype=torch.int32).to(_dist_dtype(db_packed.shape[1]))


def _np_words(packed: Tensor) -> np.ndarray:
    """CPU packed codes as numpy words: uint64 pairs when the word count is even."""
    words = packed.numpy().view(np.uint32)
    return words.view(np.uint64) if words.shape[1] % 2 == 0 else words


def _hamming_row(
    query_row: np.ndarray, db: np.ndarray, xor: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Distances of one query to every database item, into ``out`` (xor: scratch)."""
    np.bitwise_xor(db, query_row, out=xor)
    if xor.shape[1] == 1:
        return np.bitwise_count(xor[:, 0], out=out)
    return np.bitwise_count(xor).sum(axis=1, dtype=out.dtype, out=out)


def _hamming_numpy(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    query, db = _np_words(query_packed), _np_words(db_packed)
    out = np.empty((query.shape[0], db.shape[0]), dtype=_NP_DTYPES[_dist_dtype(db_packed.shape[1])])
    xor = np.empty_like(db)
    for query_row, out_row in zip(query, out):
        _hamming_row(query_row, db, xor, out_row)
    return torch.from_numpy(out)


def _hamming_rows(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    """Distances for a few query rows (the SWAR temporaries are rows x N x words)."""
    impl = _hamming_numpy if query_packed.device.type == "cpu" else _hamming_swar
    return impl(query_packed, db_packed)


def _row_steps(n_rows: int, device: torch.device) -> list[slice]:
    step = _CPU_ROWS if device.type == "cpu" else _DEVICE_ROWS
    return [slice(s, s + step) for s in range(0, n_rows, step)]


def _hamming_torch(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    if query_packed.device.type == "cpu":
        return _hamming_numpy(query_packed, db_packed)
    out = torch.empty((query_packed.shape[0], db_packed.shape[0]),
                      dtype=_dist_dtype(db_packed.shape[1]), device=db_packed.device)
    for rows in _row_steps(query_packed.shape[0], db_packed.device):
        out[rows] = _hamming_swar(query_packed[rows], db_packed)
    return out


def _stable_order(dist: Tensor) -> Tensor:
    """Per row, indices by ascending distance, ties by index (int64)."""
    if dist.device.type == "cpu":  # numpy's stable argsort is a radix sort for <= 16 bits
        return torch.from_numpy(np.argsort(dist.numpy(), axis=1, kind="stable"))
    return torch.sort(dist, dim=1, stable=True).indices


def _topk_torch(query_packed: Tensor, db_packed: Tensor, k: int) -> Tensor:
    out = torch.empty((query_packed.shape[0], k), dtype=torch.int64, device=db_packed.device)
    for rows in _row_steps(query_packed.shape[0], db_packed.device):
        out[rows] = _stable_order(_hamming_rows(query_packed[rows], db_packed))[:, :k]
    return out


def _precisions_torch(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """hits / ranks * relevance (Q x k, float64) of the top k, and the hits (Q, float64)."""
    order = _stable_order(_hamming_torch(query_packed, db_packed))[:, :k]
    if query_labels.dim() == 1:
        ranked = db_labels.index_select(0, order.reshape(-1)).view(order.shape)
        rel = ranked == query_labels[:, None]
    else:
        rel = torch.gather(_retrieval._relevance(query_labels, db_labels), 1, order)
    hits = rel.cumsum(dim=1, dtype=torch.int32)
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=hits.device)
    n_hits = hits[:, -1].to(torch.float64)
    return hits.mul_(rel) / ranks, n_hits


def _relevance_rows(query_labels: Tensor, db_labels: Tensor) -> Callable[[int], np.ndarray]:
    """query index -> bool numpy relevance of every database item (class rows cached)."""
    if query_labels.dim() == 2:
        return lambda r: _retrieval._relevance(query_labels[r : r + 1], db_labels)[0].numpy()
    labels, db = query_labels.numpy(), db_labels.numpy()

    @functools.cache
    def of_class(label: int) -> np.ndarray:
        return db == label

    return lambda r: of_class(labels[r].item())


@contextlib.contextmanager
def _serial_torch() -> Iterator[None]:
    """One intra-op thread for torch inside, for this thread and threads started inside.

    Each torch op then runs on the thread that calls it, with no OpenMP team to
    wake, or to wait for on a busy core (measured 3x slower under load).
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _cpu_workers(n_query: int) -> int:
    """Threads for _ap_sums_cpu: torch's intra-op thread count, at most a step each."""
    return max(1, min(torch.get_num_threads(), -(-n_query // _CPU_ROWS)))


def _ap_sums_cpu(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """_ap_sums on CPU: steps of _CPU_ROWS queries through numpy, on _cpu_workers threads.

    A query at a time in reused buffers is about a third faster at 59k items than
    _precisions_torch, whose N-wide temporaries for many queries at once fall out of
    cache; numpy and torch release the GIL, so the threads run on as many cores.
    The precision rows are written sparsely: hit m (1-based) at 0-based rank p is
    m / (p + 1), the value hits / ranks * relevance has there.
    """
    query, db = _np_words(query_packed), _np_words(db_packed)
    relevant = _relevance_rows(query_labels, db_labels)
    dist_dtype = _NP_DTYPES[_dist_dtype(db_packed.shape[1])]
    sums, n_hits = np.empty(query.shape[0]), np.empty(query.shape[0])
    steps = iter(_row_steps(query.shape[0], query_packed.device))  # shared by the threads

    def work() -> None:
        """Take steps until none is left (next() on a list iterator is atomic under the GIL)."""
        xor, dist = np.empty_like(db), np.empty(db.shape[0], dtype=dist_dtype)
        ranked = np.empty(k, dtype=bool)
        block = torch.zeros((_CPU_ROWS, k), dtype=torch.float64)
        for rows in steps:
            written = []
            for row, r in zip(block.numpy(), range(query.shape[0])[rows]):
                order = np.argsort(_hamming_row(query[r], db, xor, dist), kind="stable")[:k]
                at = np.flatnonzero(np.take(relevant(r), order, out=ranked))  # ranks of hits
                row[at] = np.arange(1, at.size + 1) / (at + 1)
                written.append(at)
                n_hits[r] = at.size
            # a CPU row sum of a block of >= 2 rows depends on the row alone, not on the
            # other rows or the thread count (torch would split a lone long row)
            sums[rows] = block.sum(dim=1)[: len(written)].numpy()
            for row, at in zip(block.numpy(), written):
                row[at] = 0.0  # the block is all zeros again

    workers = _cpu_workers(query.shape[0])
    with _serial_torch():
        if workers == 1:
            work()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for done in [pool.submit(work) for _ in range(workers)]:
                    done.result()
    return torch.from_numpy(sums), torch.from_numpy(n_hits)


# --------------------------------------------------------------------------- #
# Triton backend
# --------------------------------------------------------------------------- #
@_LazyJit
def _hamming_kernel(q_ptr, d_ptr, out_ptr, n_query, n_db,
                    WORDS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < n_query, cols < n_db
    acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.int32)
    for w in range(WORDS):
        q = tl.load(q_ptr + rows * WORDS + w, mask=row_ok, other=0)
        d = tl.load(d_ptr + cols * WORDS + w, mask=col_ok, other=0)
        x = q[:, None] ^ d[None, :]
        x = x - ((x >> 1) & 0x55555555)  # SWAR popcount; masks clear the sign fill
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        x = x + (x >> 8)
        x = x + (x >> 16)
        acc += x & 0x3F
    offs = rows.to(tl.int64)[:, None] * n_db + cols[None, :]
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


# modes of _rank_kernel
_TOPK, _DENSE, _FUSED = 0, 1, 2
# relevance sources of _rank_kernel
_NO_LABELS, _CLASS_LABELS, _RELEVANCE_MATRIX = 0, 1, 2


@_LazyJit
def _rank_kernel(dist_ptr, n_db, k, qlab_ptr, dlab_ptr, rel_ptr, out_ptr, hits_ptr,
                 BINS: tl.constexpr, BLOCK: tl.constexpr, MODE: tl.constexpr,
                 RELEVANCE: tl.constexpr):
    """One query a program: counting-sort ranks of its database items.

    MODE 0: out[q, rank] = item index for ranks < k (top-k ranking).
    MODE 1: out[q, rank] = hits / (rank + 1) for relevant items at ranks < k (out
            zeroed by the caller), hits_ptr[q] = number of those items.
    MODE 2: out[q] = AP@k.
    """
    row = tl.program_id(0).to(tl.int64)
    bins = tl.arange(0, BINS)
    count = tl.zeros((BINS,), dtype=tl.int32)
    rel_count = tl.zeros((BINS,), dtype=tl.int32)
    if RELEVANCE == 1:
        q_label = tl.load(qlab_ptr + row)
    for start in range(0, n_db, BLOCK):  # pass 1: histograms of all and relevant items
        idx = start + tl.arange(0, BLOCK)
        ok = idx < n_db
        d = tl.load(dist_ptr + row * n_db + idx, mask=ok, other=0).to(tl.int32)
        hot = ((d[:, None] == bins[None, :]) & ok[:, None]).to(tl.int32)
        count += tl.sum(hot, axis=0)
        if RELEVANCE == 1:
            rel = (tl.load(dlab_ptr + idx, mask=ok, other=0) == q_label).to(tl.int32)
            rel_count += tl.sum(hot * rel[:, None], axis=0)
        if RELEVANCE == 2:
            rel = tl.load(rel_ptr + row * n_db + idx, mask=ok, other=0).to(tl.int32)
            rel_count += tl.sum(hot * rel[:, None], axis=0)
    seen = tl.cumsum(count, axis=0) - count  # items ranked before each bucket
    rel_seen = tl.cumsum(rel_count, axis=0) - rel_count
    ap = tl.zeros((BLOCK,), dtype=tl.float64)
    n_hit = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, n_db, BLOCK):  # pass 2: ranks, in index order
        idx = start + tl.arange(0, BLOCK)
        ok = idx < n_db
        d = tl.load(dist_ptr + row * n_db + idx, mask=ok, other=0).to(tl.int32)
        hot = ((d[:, None] == bins[None, :]) & ok[:, None]).to(tl.int32)
        rank = tl.sum(hot * (tl.cumsum(hot, axis=0) - hot + seen[None, :]), axis=1)
        seen += tl.sum(hot, axis=0)
        if MODE == 0:
            tl.store(out_ptr + row * k + rank, idx.to(tl.int64), mask=ok & (rank < k))
        else:
            if RELEVANCE == 1:
                rel = (tl.load(dlab_ptr + idx, mask=ok, other=0) == q_label).to(tl.int32)
            else:
                rel = tl.load(rel_ptr + row * n_db + idx, mask=ok, other=0).to(tl.int32)
            rel_hot = hot * rel[:, None]
            hits = tl.sum(hot * (tl.cumsum(rel_hot, axis=0) + rel_seen[None, :]), axis=1)
            rel_seen += tl.sum(rel_hot, axis=0)
            hit = ok & (rel != 0) & (rank < k)
            precision = hits.to(tl.float64) / (rank + 1).to(tl.float64)
            if MODE == 1:
                tl.store(out_ptr + row * k + rank, precision, mask=hit)
            else:
                ap += tl.where(hit, precision, 0.0)
            n_hit += hit.to(tl.int32)
    if MODE == 1:
        tl.store(hits_ptr + row, tl.sum(n_hit, axis=0))
    if MODE == 2:
        tl.store(out_ptr + row, tl.sum(ap, axis=0) / tl.maximum(tl.sum(n_hit, axis=0), 1))


def _hamming_triton(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    n_query, words = query_packed.shape
    n_db = db_packed.shape[0]
    out = torch.empty((n_query, n_db), dtype=_dist_dtype(words), device=db_packed.device)
    if out.numel():
        block_q, block_n = 16, 128
        grid = (triton.cdiv(n_query, block_q), triton.cdiv(n_db, block_n))
        _hamming_kernel[grid](query_packed.contiguous(), db_packed.contiguous(), out,
                              n_query, n_db, WORDS=words, BLOCK_Q=block_q, BLOCK_N=block_n)
    return out


def _launch_rank(dist: Tensor, words: int, k: int, mode: int, out: Tensor,
                 n_hits: Tensor | None = None, query_labels: Tensor | None = None,
                 db_labels: Tensor | None = None) -> None:
    """Run _rank_kernel over the rows of ``dist``, relevance from the labels if given."""
    n_query, n_db = dist.shape
    if n_query == 0:
        return
    relevance, qlab, dlab, rel = _NO_LABELS, dist, dist, dist  # unused pointers: any tensor
    if query_labels is not None and query_labels.dim() == 1:
        relevance, qlab, dlab = _CLASS_LABELS, query_labels.contiguous(), db_labels.contiguous()
    elif query_labels is not None:
        relevance = _RELEVANCE_MATRIX
        rel = _retrieval._relevance(query_labels, db_labels).to(torch.uint8)
    bins = triton.next_power_of_2(words * _WORD_BITS + 1)  # one bin a distance
    block = max(16, min(256, 16384 // bins))
    _rank_kernel[(n_query,)](dist, n_db, k, qlab, dlab, rel, out,
                             out if n_hits is None else n_hits,
                             BINS=bins, BLOCK=block, MODE=mode, RELEVANCE=relevance)


def _precisions_triton(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """_precisions_torch's result from the Triton rank kernel (mode 1)."""
    n_query = query_packed.shape[0]
    precisions = torch.zeros((n_query, k), dtype=torch.float64, device=db_packed.device)
    hits = torch.zeros(n_query, dtype=torch.int32, device=db_packed.device)
    _launch_rank(_hamming_triton(query_packed, db_packed), db_packed.shape[1], k, _DENSE,
                 precisions, hits, query_labels, db_labels)
    return precisions, hits.to(torch.float64)


def _ap_sums(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Per query (float64): the sum of its precisions at relevant ranks <= k, and the
    number of those ranks, so AP@k = sums / hits.clamp(min=1).

    The sums are those of ``(hits / ranks * relevance).sum(dim=1)`` over the Q x k
    matrix of the sort-and-cumsum formulation, to the last bit. Inputs unchecked.
    """
    if backend(query_packed, db_packed, query_labels, db_labels) == "triton":
        precisions, hits = _precisions_triton(query_packed, db_packed, query_labels, db_labels, k)
    elif query_packed.device.type == "cpu":
        return _ap_sums_cpu(query_packed, db_packed, query_labels, db_labels, k)
    else:
        precisions, hits = _precisions_torch(query_packed, db_packed, query_labels, db_labels, k)
    return precisions.sum(dim=1), hits


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def hamming(query_packed: Tensor, db_packed: Tensor) -> Tensor:
    """Pairwise Hamming distances (Q x N) between packed codes.

    The dtype is the smallest that holds 32 x words: uint8 up to 7 words (224 bits),
    int16 up to 1023 words, int32 beyond.
    """
    _check_packed(query_packed, db_packed)
    if backend(query_packed, db_packed) == "triton":
        return _hamming_triton(query_packed, db_packed)
    return _hamming_torch(query_packed, db_packed)


def hamming_topk(query_packed: Tensor, db_packed: Tensor, k: int) -> Tensor:
    """Database indices (Q x min(k, N), int64) of each query's top k in the stable
    Hamming ranking: ascending distance, ties by ascending database index."""
    _check_packed(query_packed, db_packed)
    _check_k(k)
    k = min(k, db_packed.shape[0])
    if backend(query_packed, db_packed) == "triton":
        out = torch.empty((query_packed.shape[0], k), dtype=torch.int64, device=db_packed.device)
        _launch_rank(_hamming_triton(query_packed, db_packed), db_packed.shape[1], k, _TOPK, out)
        return out
    return _topk_torch(query_packed, db_packed, k)


def average_precision(
    query_packed: Tensor, db_packed: Tensor, query_labels: Tensor, db_labels: Tensor, k: int
) -> Tensor:
    """Per-query AP@k (Q, float64) under the stable Hamming ranking.

    AP@k is the mean precision at the ranks of the relevant items in the top k
    (``k`` is clamped to N), 0 when there are none. Labels are 1-D class indices or
    2-D multi-hot, as in :mod:`iemlib.retrieval`. The torch backend matches
    retrieval's per-query AP to the last bit. The Triton kernel fuses ranking and AP
    and needs no Q x k buffer; it adds the precisions in another order, so its
    values may differ in the last bits.
    """
    _check_ap_inputs(query_packed, db_packed, query_labels, db_labels, k)
    n_query, k = query_packed.shape[0], min(k, db_packed.shape[0])
    ap = torch.empty(n_query, dtype=torch.float64, device=db_packed.device)
    if backend(query_packed, db_packed, query_labels, db_labels) == "triton":
        _launch_rank(_hamming_triton(query_packed, db_packed), db_packed.shape[1], k, _FUSED,
                     ap, None, query_labels, db_labels)
        return ap
    step = _retrieval.DEFAULT_CHUNK_SIZE
    for s in range(0, n_query, step):
        rows = slice(s, s + step)
        sums, hits = _ap_sums(query_packed[rows], db_packed, query_labels[rows], db_labels, k)
        ap[rows] = sums / hits.clamp(min=1.0)
    return ap
