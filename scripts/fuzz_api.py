#!/usr/bin/env python3
"""The long run of the schemathesis fuzz of the HTTP API (tests/test_api_fuzz.py is the short one).

Starts an embedded PostgreSQL in a temporary IMGSEARCH_HOME (or uses DATABASE_URL), serves the API on
127.0.0.1 in this process with URL fetches confined to loopback (tests/apifuzz.py: no name is
resolved, nothing beyond 127.0.0.1/::1 is connected to), stores a few images, then sends
--examples generated requests per operation and generation mode (valid and invalid), with the write
key. Prints one JSON line: requests, statuses per operation, seconds, the 5xx answers found, and the
load average. Exit status 1 if any 5xx was found.

  python scripts/fuzz_api.py --examples 200 --seed 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200, help="generated requests per operation and mode")
    p.add_argument("--seed", type=int, default=1, help="hypothesis seed (0: derandomized)")
    args = p.parse_args()
    home = None
    if not os.environ.get("DATABASE_URL"):
        home = tempfile.mkdtemp(prefix="imgsearch-fuzz-")
        os.environ["IMGSEARCH_HOME"] = home
    from apifuzz import fuzz, loopback_only
    from PIL import Image
    from webserver import WRITE_KEY, LiveServer

    load_before = os.getloadavg()
    started, cpu = time.monotonic(), time.process_time()
    with loopback_only() as refused:
        server = LiveServer(api_keys=(WRITE_KEY,), request_timeout_s=20.0)
        try:
            with server.client(WRITE_KEY) as client:
                for k in range(5):
                    out = io.BytesIO()
                    Image.new("RGB", (64 + 8 * k, 48), (40 * k, 90, 200)).save(out, "PNG")
                    client.post("/api/images", content=out.getvalue(), params={"metadata": json.dumps({"k": k})})
            figures = fuzz(server.url, WRITE_KEY, examples=args.examples, seed=args.seed)
            with server.client() as client:
                figures["healthz_after"] = client.get("/healthz").status_code
        finally:
            server.stop()
    figures.update(examples=args.examples, seed=args.seed, refused_connects=refused,
                   wall_s=round(time.monotonic() - started, 1), cpu_s=round(time.process_time() - cpu, 1),
                   loadavg_before=load_before, loadavg_after=os.getloadavg())
    print(json.dumps(figures))
    if home:
        from engine.embedded import EmbeddedServer

        EmbeddedServer(Path(home)).stop()
    return 1 if figures["server_errors"] or refused else 0


if __name__ == "__main__":
    sys.exit(main())
