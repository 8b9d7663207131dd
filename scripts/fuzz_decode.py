#!/usr/bin/env python3
"""Fuzz the decode + fingerprint path (engine.fingerprint on untrusted bytes) for a bounded time.

Hypothesis generates mutated images of every format we read (tests/fuzzdecode.py); each input is
fingerprinted (and every 4th also query-fingerprinted). An exception that is not one of our
errors (engine.errors), or an input slower than 10 s, is a crash: the input is kept in
tests/data/fuzz/ (crash-<sha>.bin, with the traceback in .txt), where tests/test_fuzz_decode.py
replays it on every test run. Prints one JSON line with the figures; exit status 1 on a crash.

  python scripts/fuzz_decode.py --seconds 600
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300.0, help="how long to fuzz")
    p.add_argument("--seed", type=int, default=1, help="first hypothesis seed (each batch adds 1)")
    p.add_argument("--batch", type=int, default=500, help="inputs per hypothesis run")
    args = p.parse_args()

    import hypothesis
    from fuzzdecode import check, keep, mutated
    from hypothesis import HealthCheck, Phase

    outcomes: collections.Counter = collections.Counter()
    crashes: list[str] = []
    started, cpu = time.monotonic(), time.process_time()
    load_before = os.getloadavg()
    seed = args.seed
    while time.monotonic() - started < args.seconds:
        @hypothesis.seed(seed)
        @hypothesis.settings(max_examples=args.batch, deadline=None, database=None, print_blob=False,
                             suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @hypothesis.given(data=mutated())
        def run(data):
            if time.monotonic() - started >= args.seconds:
                return
            for query in (False, True) if outcomes.total() % 4 == 0 else (False,):
                try:
                    outcomes[check(data, query)] += 1
                except Exception as exc:  # noqa: BLE001 - a crash: keep the input and go on
                    why = "".join(traceback.format_exception(exc))
                    crashes.append(str(keep(data, why)))
                    outcomes["CRASH"] += 1

        run()
        seed += 1
    figures = {"seconds": round(time.monotonic() - started, 1), "cpu_s": round(time.process_time() - cpu, 1),
               "inputs": outcomes.total(), "outcomes": dict(outcomes.most_common()), "crashes": crashes,
               "seeds": [args.seed, seed - 1], "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(json.dumps(figures))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
