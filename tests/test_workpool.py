"""engine.workpool: results from spawned worker processes, and a task that kills its worker is
reported alone (after one retry) while the others go through."""

from __future__ import annotations

import os
import signal

from engine.workpool import imap_unordered


def double_or_die(task: int) -> int:
    if task == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as a decoder crash or the OOM killer would
    return task * 2


def test_every_result_comes_and_only_the_killer_is_reported():
    results = list(imap_unordered(double_or_die, list(range(10)), 2, crashed=lambda t: ("crashed", t)))
    assert sorted(r for r in results if not isinstance(r, tuple)) == [t * 2 for t in range(10) if t != 3]
    assert [r for r in results if isinstance(r, tuple)] == [("crashed", 3)]


def test_one_worker_and_ticks():
    results = list(imap_unordered(double_or_die, [1, 2, 3, 4], 1, crashed=lambda t: ("crashed", t), tick=0.01))
    assert sorted(r for r in results if isinstance(r, int)) == [2, 4, 8]
    assert ("crashed", 3) in results
