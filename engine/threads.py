"""Threads for one query's work: the costly parts of a search release the GIL (OpenCV's Haar
detector, ORB and matcher; numpy's large array operations), so on an idle machine a query's
fingerprint and its verification use every core instead of one.

One pool per process, of IMGSEARCH_SEARCH_THREADS threads (default: the number of cores, at
most 4), shared by every search of the process; with 1, everything runs in the caller's thread.
The pool is used only while no other caller's work is in it: under load (an HTTP server with
more requests than cores) the cores are busy with requests anyway, and handing every request's
work to the same few threads cost 16% of the searches/s (docs/benchmarks.md, HTTP).
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
_in_flight = 0  # tasks submitted and not finished


def _executor() -> ThreadPoolExecutor | None:
    """The pool, or None: one thread configured, or another caller's work in the pool now."""
    global _pool
    threads = load_settings().search_threads
    if threads <= 1:
        return None
    with _lock:
        if _in_flight:
            return None
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imgsearch-query")
        return _pool


def _submit(pool: ThreadPoolExecutor, fn: Callable, *args) -> Future:
    global _in_flight

    def counted():
        global _in_flight
        try:
            return fn(*args)
        finally:  # before the future is done: its waiter finds the pool free again
            with _lock:
                _in_flight -= 1

    with _lock:
        _in_flight += 1
    return pool.submit(counted)


def map_in_threads(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(x) for x in items], in the pool (inline for one item, or without the pool)."""
    items = list(items)
    pool = _executor() if len(items) > 1 else None
    if pool is None:
        return [fn(x) for x in items]
    return [f.result() for f in [_submit(pool, fn, x) for x in items]]


def start(fn: Callable[[], R]) -> Future[R]:
    """fn() begun in the pool, or run now without it; ``.result()`` gives its value or raises."""
    pool = _executor()
    if pool is not None:
        return _submit(pool, fn)
    done: Future[R] = Future()
    try:
        done.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to .result(), as the pool would
        done.set_exception(exc)
    return done
