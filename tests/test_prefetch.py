"""soraflow.prefetch.ordered_map: results in order, work ahead in threads, errors where they belong."""

from __future__ import annotations

import threading
import time

import pytest

from soraflow.prefetch import ordered_map


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_in_input_order(workers):
    def slow_square(i: int) -> int:
        time.sleep(0.002 * (i % 3))  # later items often finish first
        return i * i

    assert list(ordered_map(slow_square, range(20), workers, ahead=4)) == [i * i for i in range(20)]
    assert list(ordered_map(slow_square, [], workers, ahead=4)) == []


def test_work_runs_in_other_threads_and_at_most_ahead_items_early():
    started: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def record(i: int) -> int:
        with lock:
            started.append(i)
            threads.add(threading.current_thread().name)
        return i

    out = ordered_map(record, range(100), workers=2, ahead=5)
    assert next(out) == 0
    time.sleep(0.05)
    with lock:
        assert max(started) <= 5  # the first result taken, five more submitted: items 0..5
    assert list(out) == list(range(1, 100))
    assert threads and all(name.startswith("prefetch") for name in threads)
    serial: set[str] = set()
    list(ordered_map(lambda i: serial.add(threading.current_thread().name), range(3), workers=1, ahead=5))
    assert serial == {threading.current_thread().name}


def test_an_error_is_raised_where_its_result_would_come():
    def fail_at_3(i: int) -> int:
        if i == 3:
            raise ValueError("item 3 is bad")
        return i

    got: list[int] = []
    with pytest.raises(ValueError, match="item 3 is bad"):
        for value in ordered_map(fail_at_3, range(10), workers=2, ahead=4):
            got.append(value)
    assert got == [0, 1, 2]
