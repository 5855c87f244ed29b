"""A bounded parallel map for I/O-bound work over long listings (blob copies).

Blob stores answer one round trip at a time per connection; a handful of threads
overlap them, which is what limits S3 and Azure throughput. Used by backups and by
``medvault storage migrate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def run_parallel(
    work: Callable[[_In], _Out],
    items: Iterable[_In],
    *,
    parallel: int,
    thread_name: str = "parallel",
) -> Iterator[_Out]:
    """``work`` over ``items`` on ``parallel`` threads, at most 2x that many queued.

    Bounded so that listing a million keys does not queue a million futures; the
    first error stops the queue and is raised (work already running finishes).
    """
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=thread_name) as pool:
        pending: set[Future[_Out]] = set()
        try:
            for item in items:
                pending.add(pool.submit(work, item))
                if len(pending) >= parallel * 2:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
