"""Several processes, one condensation: a torchrun launch shards the classes.

``torchrun --nproc_per_node N -m iemlib run ...`` starts N processes. Each joins the process
group (``session``) and computes the loss terms of its share of the classes (``owned_classes``),
while drawing every random number one process would draw; the image loop sums the image
gradients and the losses over the processes (``all_reduce_``). Every process so holds the whole
synthetic set, as one process computes it; only the main process (rank 0) writes files.
Outside torchrun every function here is the one-process identity.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def launched() -> bool:
    """Whether torchrun started this process (it sets RANK, LOCAL_RANK and WORLD_SIZE)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """Whether this process is in a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes records, files and progress bars (rank 0, or the only one)."""
    return rank() == 0


def shard(num_classes: int, rank: int, world_size: int) -> range:
    """The classes of process ``rank`` of ``world_size``: every world_size-th from its rank."""
    if world_size > num_classes:
        raise ValueError(f"{world_size} processes for {num_classes} classes: every process needs "
                         f"a class, so launch at most {num_classes}")
    return range(rank, num_classes, world_size)


def owned_classes(num_classes: int) -> range:
    """The classes whose loss terms this process computes (all of them in one process)."""
    return shard(num_classes, rank(), world_size())


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the processes, in place (unchanged in one process); returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def local_device(device: torch.device) -> torch.device:
    """Under torchrun an unnumbered ``cuda`` is this process's GPU, cuda:LOCAL_RANK."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """Inside torchrun, be in its process group for the block (nccl on GPUs, gloo otherwise) and
    leave it after; yields this process's device. Outside torchrun, or already in a group, it
    only yields ``device``."""
    if not launched() or active():
        yield device
        return
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()
