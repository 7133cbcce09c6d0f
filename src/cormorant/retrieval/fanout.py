"""Calls to every shard at once: the router's fan-out.

One search makes the same call on every shard (count the BM25 statistics, rank, fetch the
hits' text); :func:`fan_out` starts them all together and returns their answers in order.
They run on one small thread pool shared by every router in the process. That overlaps the
work because what a shard's call spends its time in releases the GIL: numpy and FAISS
kernels, torch, file reads, and for a shard served on Ray Serve, waiting for the replica's
answer (``DeploymentResponse.result``). Pure-Python work (BM25's postings loop) overlaps
only partly.

A call made from inside the pool (a shard's part that itself fans out) runs in the caller's
thread, so the pool cannot wait on itself.

Example:
    >>> fan_out([lambda: 1, lambda: 2, lambda: 3])
    [1, 2, 3]
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

POOL_THREADS = 16
"""Threads shared by every router in the process: enough for several concurrent searches
over several shards each (served shards' calls mostly wait on a replica)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside = threading.local()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="cormorant-shard",
                                       initializer=_mark_inside)
            atexit.register(_pool.shutdown, wait=False)
        return _pool


def _mark_inside() -> None:
    _inside.active = True


def fan_out(calls: Sequence[Callable[[], T]], parallel: bool = True) -> list[T]:
    """Every call's answer, in order, the calls run at once on the shared pool.

    ``parallel=False`` (parts not safe to call from two threads at once), a single call, or
    a call from a pool thread run them one after another here instead. The first call to
    raise has its error raised here, once every call has finished (none is left running).

    Example:
        >>> fan_out([lambda: "shard 0", lambda: "shard 1"])
        ['shard 0', 'shard 1']
    """
    if not parallel or len(calls) < 2 or getattr(_inside, "active", False):
        return [call() for call in calls]
    futures = [_shared_pool().submit(call) for call in calls]
    errors = [f.exception() for f in futures]  # waits for every call
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        raise failed
    return [f.result() for f in futures]
