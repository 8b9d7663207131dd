"""A small process pool for ingest: a pipe per worker, results as they come, crashes attributed.

``concurrent.futures.ProcessPoolExecutor`` turns one dead worker into a broken pool (every
pending task fails, and on Python 3.11 its shutdown can hang when a worker dies at the wrong
moment). Here each worker has its own pipe and works through the tasks sent to it in order, at
most ``depth`` at a time; when a worker dies, the task at the head of its list is the one it died
on: that task is retried once in a fresh worker (an OOM kill may have hit an innocent task) and
reported as a crash if it kills that one too; the tasks queued behind it go back to the queue
unharmed. Workers are spawned (nothing of the parent's state, e.g. its database socket, is
inherited) and die with their parent.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait

MAX_ATTEMPTS = 2  # a task a worker died on runs once more before it is reported


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies (PR_SET_PDEATHSIG), so that a killed run
    leaves no orphan worker (or its open transaction) behind; elsewhere workers see EOF instead."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - other systems
        pass


def _serve(conn, fn: Callable, initializer: Callable | None, initargs: tuple) -> None:
    _die_with_parent()
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(fn(task))


class _Worker:
    def __init__(self, context, fn: Callable, initializer: Callable | None, initargs: tuple):
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=_serve, args=(child, fn, initializer, initargs), daemon=True)
        self.proc.start()
        child.close()
        self.tasks: deque[tuple[object, int]] = deque()  # (task, attempts so far), in the order sent

    def send(self, task: object, tries: int) -> None:
        self.tasks.append((task, tries))
        try:
            self.conn.send(task)
        except OSError:  # it died and we have not seen it yet: its sentinel will tell, and the task goes back
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()


def imap_unordered(fn: Callable, tasks: Sequence, workers: int, *, crashed: Callable[[object], object],
                   initializer: Callable | None = None, initargs: tuple = (), depth: int = 2,
                   tick: float | None = None) -> Iterator:
    """fn(task) for every task in `workers` processes, results in the order they come. A task
    that kills its worker twice yields crashed(task) instead. With `tick`, None is yielded
    whenever that many seconds pass without a result."""
    context = multiprocessing.get_context("spawn")
    queue: deque[tuple[object, int]] = deque((task, 0) for task in tasks)
    pool = [_Worker(context, fn, initializer, initargs) for _ in range(max(1, min(workers, len(tasks))))]
    try:
        while queue or any(w.tasks for w in pool):
            for w in pool:
                # a retried task runs alone in its worker, so that nothing else is blamed for it
                while queue and len(w.tasks) < depth and not (w.tasks and w.tasks[0][1]):
                    if queue[0][1] and w.tasks:
                        break
                    w.send(*queue.popleft())
            busy = [w for w in pool if w.tasks]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=tick))
            if not ready:
                yield None
                continue
            for no, w in enumerate(pool):
                if w.conn in ready:
                    try:
                        result = w.conn.recv()
                    except (EOFError, OSError):  # it died: its sentinel says so too
                        pass
                    else:
                        w.tasks.popleft()
                        yield result
                        continue
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join()
                    if w.tasks:
                        task, tries = w.tasks.popleft()
                        if tries + 1 >= MAX_ATTEMPTS:
                            yield crashed(task)
                        else:
                            queue.appendleft((task, tries + 1))
                        queue.extendleft(reversed(w.tasks))  # untouched: back in their turn
                    w.conn.close()
                    pool[no] = _Worker(context, fn, initializer, initargs)
    finally:
        for w in pool:
            w.stop()
        for w in pool:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
