"""Work computed ahead in threads, consumed in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` with up to ``ahead`` results (default ``2 * workers``) computed in
    advance by ``workers`` threads.

    Results come in the order of ``items``; an exception raised by ``fn`` is raised where its
    result would have come. Pays off when ``fn`` releases the GIL (video decoding, torch ops)
    while the consumer works; ``workers <= 1`` runs ``fn`` in the caller's thread, as ``map``
    does. ``ahead`` bounds the memory held by finished results.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    ahead = 2 * workers if ahead is None else ahead
    it = iter(items)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch") as pool:
        try:
            pending.extend(pool.submit(fn, item) for item in islice(it, max(ahead, 1)))
            while pending:
                done = pending.popleft()
                pending.extend(pool.submit(fn, item) for item in islice(it, 1))  # keep `ahead` in flight
                yield done.result()
        finally:
            for future in pending:  # the consumer stopped early or a result raised
                future.cancel()
