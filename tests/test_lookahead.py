"""made_ahead: items in order, as made in the caller, the next ones made on worker threads."""

from __future__ import annotations

import threading
import time

import pytest

from iemlib.lookahead import made_ahead


def made(index: int) -> tuple[int, int, str]:
    time.sleep(0.002 * (index % 3))  # uneven work: later items may finish first
    return index, index * index, threading.current_thread().name


@pytest.mark.parametrize("ahead", [0, 1, 2, 3])
@pytest.mark.parametrize("indices", [range(0), range(5, 6), range(3, 12)])
def test_items_come_in_order_as_the_caller_would_make_them(ahead, indices):
    items = list(made_ahead(made, indices, ahead))
    assert [item[:2] for item in items] == [made(i)[:2] for i in indices]
    caller = threading.current_thread().name
    assert all(item[2] == caller for item in items[:1])  # the first: in the calling thread
    threads = {item[2] for item in items[1:]}
    if len(indices) > 1 and ahead == 0:
        assert threads == {caller}
    elif len(indices) > 1:  # which worker takes which item is the pool's business
        assert threads and threads <= {f"iemlib-ahead_{k}" for k in range(ahead)}


def test_the_next_items_are_made_while_the_caller_holds_one():
    started: list[int] = []
    items = made_ahead(lambda i: started.append(i) or i, range(10), ahead=2)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started == [0, 1, 2]  # two ahead, no more
    items.close()  # a caller that stops early leaves no work behind
    time.sleep(0.01)
    assert started == [0, 1, 2]


def test_an_error_comes_out_when_its_item_is_due():
    def make(index: int) -> int:
        if index == 3:
            raise ValueError("bad draw 3")
        return index

    items = made_ahead(make, range(6), ahead=2)
    assert [next(items), next(items), next(items)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad draw 3"):
        next(items)
