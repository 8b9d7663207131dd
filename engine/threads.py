"""Threads for one query's work: the costly parts of a search release the GIL (OpenCV's Haar
detector, ORB and matcher; numpy's large array operations), so on an idle machine a query's
fingerprint and its verification use every core instead of one.

One pool per process, of IMGSEARCH_SEARCH_THREADS threads (default: the number of cores, at
most 4), shared by every search of the process; with 1, everything runs in the caller's thread.
Under load (an HTTP server with more requests than cores) the cores are busy anyway and the
threads change little.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .config import load_settings

T = TypeVar("T")
R = TypeVar("R")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor | None:
    global _pool
    threads = load_settings().search_threads
    if threads <= 1:
        return None
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imgsearch-query")
    return _pool


def map_in_threads(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(x) for x in items], in the pool (inline for one item or without a pool)."""
    items = list(items)
    pool = _executor() if len(items) > 1 else None
    return list(pool.map(fn, items)) if pool is not None else [fn(x) for x in items]


def start(fn: Callable[[], R]) -> Future[R]:
    """fn() begun in the pool, or run now without one; ``.result()`` gives its value or raises."""
    pool = _executor()
    if pool is not None:
        return pool.submit(fn)
    done: Future[R] = Future()
    try:
        done.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to .result(), as the pool would
        done.set_exception(exc)
    return done
