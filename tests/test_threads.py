"""engine/threads.py: a query's work in threads, with the same results as in one."""

from __future__ import annotations

import threading

import pytest

from engine import threads


def test_map_keeps_the_order_and_uses_the_pool(monkeypatch):
    monkeypatch.setenv("IMGSEARCH_SEARCH_THREADS", "2")
    names = threads.map_in_threads(lambda x: (x * x, threading.current_thread().name), range(20))
    assert [v for v, _ in names] == [x * x for x in range(20)]
    assert all(n.startswith("imgsearch-query") for _, n in names)


def test_one_thread_runs_in_the_caller(monkeypatch):
    monkeypatch.setenv("IMGSEARCH_SEARCH_THREADS", "1")
    me = threading.current_thread().name
    assert threads.map_in_threads(lambda _: threading.current_thread().name, range(3)) == [me] * 3
    assert threads.start(lambda: threading.current_thread().name).result() == me


@pytest.mark.parametrize("count", ["1", "2"])
def test_errors_reach_the_caller(monkeypatch, count):
    monkeypatch.setenv("IMGSEARCH_SEARCH_THREADS", count)

    def fail(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 0"):
        threads.map_in_threads(fail, [0, 1])
    with pytest.raises(ValueError, match="bad 7"):
        threads.start(lambda: fail(7)).result()


def test_the_pool_is_left_to_whoever_uses_it(monkeypatch):
    """While one caller's work is in the pool, another's runs in its own thread (a loaded server)."""
    monkeypatch.setenv("IMGSEARCH_SEARCH_THREADS", "2")
    release = threading.Event()
    held = threads.start(release.wait)
    me = threading.current_thread().name
    assert threads.map_in_threads(lambda _: threading.current_thread().name, range(3)) == [me] * 3
    release.set()
    held.result()
    assert all(n.startswith("imgsearch-query") for n in threads.map_in_threads(
        lambda _: threading.current_thread().name, range(4)))
