"""Host work made ahead on worker threads, so that a GPU need not wait for it.

A loop whose device work is queued asynchronously (a GPU) is bound by the host once the device
is fast: every iteration's random draws (a freshly initialised network, batch indices,
augmentation parameters) are CPU work that the device would wait for. ``made_ahead`` makes the
next items on worker threads while the caller uses the current one. The work must be CPU work
that touches no global state (draws from explicit generators only) and depends on nothing but
its index: the caller's thread keeps every device call, and the items come in order, each
exactly as made in the caller's thread.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


def made_ahead(make: Callable[[int], T], indices: Sequence[int], ahead: int = 1) -> Iterator[T]:
    """``make(i)`` for each of ``indices``, in order. With ``ahead`` > 0 the first is made in the
    calling thread, and while the caller uses an item the next ``ahead`` are made on as many
    worker threads (an error there comes out when its item is due); with 0 each is made in the
    calling thread when it is due."""
    if ahead < 1 or len(indices) < 2:
        yield from map(make, indices)
        return
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="iemlib-ahead") as workers:
        pending: deque[Future[T]] = deque()
        upcoming = iter(indices[1:])

        def refill() -> None:
            for index in upcoming:
                pending.append(workers.submit(make, index))
                if len(pending) == ahead:
                    return

        current = make(indices[0])
        while True:
            refill()
            yield current
            if not pending:
                return
            current = pending.popleft().result()
