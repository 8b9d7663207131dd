#!/usr/bin/env python3
"""Load with writes: N concurrent clients mixing searches and adds against `imgsearch serve` on loopback.

Starts `imgsearch serve --workers W` on 127.0.0.1 over an embedded PostgreSQL in a new temporary
IMGSEARCH_HOME (or over DATABASE_URL when set), stores the tests' pool photos, then for --duration
seconds runs --clients concurrent clients (httpx, async, one process), each sending one request
at a time: a search (POST /api/search with a derived image: crop, resize, mirror, recompression
of a pool photo) with probability 1 - --add-share, else an add (POST /api/images of a new image
with a unique URI: every add is new bytes). Afterwards it checks

  - zero 5xx answers and zero failed connections;
  - every acknowledged add (200/201) is there: GET /api/images/{id} has its SHA-256 and its URI;
  - the server's counts equal the stored ones (images = pool + acknowledged new adds);

and prints one JSON line: requests per kind, statuses, latency percentiles (p50/p95/p99/max) per
kind, throughput, the server's CPU seconds and the load average before and after (the machine is
shared: read the latencies beside it). Exit status 1 if a check fails.

  python bench/reliability_load.py --clients 16 --duration 60 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "tests" / "data" / "pool"
KEY = "load-test-write-key-0123456789"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(im: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def photos() -> list[Path]:
    return sorted(p for p in POOL.rglob("*.jpg"))


def derived_queries(paths: list[Path], n: int, rng: random.Random) -> list[bytes]:
    """n query images: a crop, resize, mirror or recompression of a pool photo."""
    out = []
    bases = []
    for path in paths:
        with Image.open(path) as im:
            im.draft("RGB", (1024, 1024))  # web-sized queries (the pool's largest photos are 4000 px)
            bases.append(im.convert("RGB"))
    for k in range(n):
        im = bases[k % len(bases)]
        w, h = im.size
        kind = k % 4
        if kind == 0:
            x0, y0 = rng.uniform(0, 0.2) * w, rng.uniform(0, 0.2) * h
            im = im.crop((int(x0), int(y0), int(x0 + 0.7 * w), int(y0 + 0.7 * h)))
        elif kind == 1:
            im = im.resize((max(32, int(w * rng.uniform(0.4, 0.9))), max(32, int(h * rng.uniform(0.4, 0.9)))))
        elif kind == 2:
            im = ImageOps.mirror(im)
        out.append(jpeg(im, quality=rng.randint(55, 90)))
    return out


def new_images(paths: list[Path], n: int, rng: random.Random) -> list[bytes]:
    """n distinct images to add: a pool photo, shrunk, with a unique block of noise pasted in."""
    out = []
    bases = []
    for path in paths:
        with Image.open(path) as im:
            im.draft("RGB", (400, 400))
            base = im.convert("RGB")
        base.thumbnail((400, 400))
        bases.append(base)
    for k in range(n):
        im = bases[k % len(bases)].copy()
        im.thumbnail((rng.randint(200, 400), 400))
        noise = np.random.default_rng(k).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        im.paste(Image.fromarray(noise), (rng.randrange(max(1, im.width - 40)), rng.randrange(max(1, im.height - 40))))
        out.append(jpeg(im))
    return out


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


async def client_loop(k: int, base: str, duration: float, add_share: float, queries: list[bytes],
                      additions: list[bytes], state: dict) -> None:
    rng = random.Random(1000 + k)
    headers = {"authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, trust_env=False) as client:
        end = state["start"] + duration
        while time.monotonic() < end:
            is_add = rng.random() < add_share and state["next_add"] < len(additions)
            t0 = time.monotonic()
            try:
                if is_add:
                    index = state["next_add"]
                    state["next_add"] += 1
                    uri = f"https://example.org/load/{index}.jpg"
                    r = await client.post("/api/images", content=additions[index], params={"uri": uri})
                    if r.status_code in (200, 201):
                        sha = hashlib.sha256(additions[index]).hexdigest()
                        state["acknowledged"].append((uri, r.json()["id"], sha))
                else:
                    r = await client.post("/api/search", content=rng.choice(queries),
                                          headers={"content-type": "image/jpeg"})
            except httpx.HTTPError as exc:
                state["errors"].append(f"{'add' if is_add else 'search'}: {type(exc).__name__}: {exc}")
                continue
            kind = "add" if is_add else "search"
            state["latency"][kind].append(time.monotonic() - t0)
            state["statuses"].setdefault(kind, {}).setdefault(str(r.status_code), 0)
            state["statuses"][kind][str(r.status_code)] += 1
            if r.status_code >= 500:
                state["server_errors"].append((kind, r.status_code, r.text[:300]))


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"imgsearch serve exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("imgsearch serve did not become healthy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--workers", type=int, default=2, help="server processes (imgsearch serve --workers)")
    p.add_argument("--add-share", type=float, default=0.3, help="share of requests that are adds")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="IMGSEARCH_REQUEST_TIMEOUT for the server (default: its own default, 30 s)")
    p.add_argument("--new-images", type=int, default=800, help="distinct images made for the adds")
    p.add_argument("--log", default=None, help="the server's log file (default: in the temporary home)")
    args = p.parse_args()

    rng = random.Random(7)
    env = dict(os.environ)
    home = None
    if not env.get("DATABASE_URL"):
        home = Path(tempfile.mkdtemp(prefix="imgsearch-load-"))
        env["IMGSEARCH_HOME"] = str(home)
    env["IMGSEARCH_API_KEYS"] = KEY
    if args.request_timeout is not None:
        env["IMGSEARCH_REQUEST_TIMEOUT"] = str(args.request_timeout)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(args.log) if args.log else Path(home or tempfile.gettempdir()) / "serve.log"
    paths = photos()
    log(f"making 200 query and {args.new_images} new images")
    queries = derived_queries(paths, 200, rng)
    additions = new_images(paths, args.new_images, rng)

    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port), "--workers",
                                 str(args.workers), "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
    try:
        wait_healthy(base, proc)
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {KEY}"}, timeout=120,
                          trust_env=False) as client:
            for path in paths:
                r = client.post("/api/images", content=path.read_bytes(), params={"uri": f"file://{path.name}"})
                assert r.status_code in (200, 201), r.text
            images_before = client.get("/api/stats").json()["counts"]["images"]
        log(f"{images_before} images stored; {args.clients} clients for {args.duration:g} s")

        state = {"start": time.monotonic(), "next_add": 0, "acknowledged": [], "errors": [], "server_errors": [],
                 "statuses": {}, "latency": {"search": [], "add": []}}
        load_before = os.getloadavg()

        async def run_all():
            await asyncio.gather(*(client_loop(k, base, args.duration, args.add_share, queries, additions, state)
                                   for k in range(args.clients)))

        asyncio.run(run_all())
        wall = time.monotonic() - state["start"]
        load_after = os.getloadavg()
        log(f"load done in {wall:.1f} s; checking {len(state['acknowledged'])} acknowledged adds")

        missing = []
        with httpx.Client(base_url=base, timeout=120, trust_env=False) as client:
            for uri, image_id, sha in state["acknowledged"]:
                r = client.get(f"/api/images/{image_id}")
                if r.status_code != 200 or r.json()["sha256"] != sha or uri not in [u["uri"] for u in r.json()["uris"]]:
                    missing.append((uri, image_id, r.status_code))
            counts = client.get("/api/stats").json()["counts"]
        new_ids = {image_id for _, image_id, _ in state["acknowledged"]}
        counts_ok = counts["images"] == images_before + len(new_ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = sum(len(v) for v in state["latency"].values())
    figures = {
        "clients": args.clients, "duration_s": args.duration,
        "request_timeout_s": args.request_timeout or 30.0, "workers": args.workers, "add_share": args.add_share,
        "wall_s": round(wall, 1), "requests": requests, "requests_per_s": round(requests / wall, 2),
        "statuses": state["statuses"], "server_errors_5xx": len(state["server_errors"]),
        "connection_errors": len(state["errors"]), "acknowledged_adds": len(state["acknowledged"]),
        "acknowledged_adds_missing": len(missing), "counts_consistent": counts_ok,
        "latency": {k: percentiles(v) for k, v in state["latency"].items()},
        "all_latency": percentiles(state["latency"]["search"] + state["latency"]["add"]),
        "server_cpu_s": round(server_cpu.ru_utime + server_cpu.ru_stime, 1),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))
    for kind, status, text in state["server_errors"][:10]:
        log(f"5xx on {kind}: {status} {text}")
    for line in state["errors"][:10]:
        log(f"connection error: {line}")
    for line in missing[:10]:
        log(f"acknowledged add missing: {line}")
    if home:
        from engine.embedded import EmbeddedServer

        EmbeddedServer(home).stop()
    ok = not state["server_errors"] and not state["errors"] and not missing and counts_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
