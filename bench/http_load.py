#!/usr/bin/env python3
"""HTTP load on `imgsearch serve`: searches/s and latency percentiles with N concurrent clients.

Two steps:

  prepare   ingest real photos (so searches find things), then add synthetic images until the
            `regions` table holds --regions rows (three region hashes each: the global pHash and
            two 'picture' regions; 80% uniform random, 20% real hashes with 7-14 bits flipped so
            multi-index buckets collide as with real data; random PDQs, no keypoints, no
            thumbnails, metadata {"synthetic": true}).
  run       --clients concurrent clients (httpx, async, one process) send searches for
            --duration seconds; every query is a different derived image (crop, resize, mirror,
            recompression of a pool photo, made up front), so no cache anywhere could answer
            twice. `--endpoint matches` searches with stored images instead
            (GET /api/images/{id}/matches: no fingerprint, the SQL + verification part alone).

Usage (the figures in docs/benchmarks.md):

  export IMGSEARCH_HOME=/tmp/httpbench
  python bench/http_load.py prepare --pool ../shared/eval/pool --regions 1000000
  imgsearch serve --workers 2 --port 8100 &
  python bench/http_load.py run --url http://127.0.0.1:8100 --pool ../shared/eval/pool --clients 16 --duration 60

Prints one JSON line with the figures (also the machine's load average before and after, and on
Linux `cpu_ms_per_search`: the CPU time the server's processes, PostgreSQL, this load generator
and the whole machine spent during the run, divided by the searches served).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BATCH = 50_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def photos(pool: Path) -> list[Path]:
    return sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "icons" not in p.parts)


# --- prepare -------------------------------------------------------------------------------------
INSERT_IMAGES = """
insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality, metadata)
select sha256(convert_to('synthetic:' || t.i, 'UTF8')), 640, 480, 'SYNTHETIC', 0, t.a::bit(64), t.a::bit(64),
       t.g::bit(64), t.g::bit(64) || t.a::bit(64) || t.b::bit(64) || t.a::bit(64), 0, '{"synthetic": true}'
from unnest(%(i)s::int8[], %(g)s::int8[], %(a)s::int8[], %(b)s::int8[]) as t(i, g, a, b)
order by t.i
returning id, phash::bigint as g
"""
INSERT_REGIONS = """
insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash)
select t.id, t.no, t.kind, t.x0, t.y0, t.x1, t.y1, t.h::bit(64)
from unnest(%(id)s::int8[], %(no)s::int2[], %(kind)s::text[], %(x0)s::real[], %(y0)s::real[], %(x1)s::real[],
            %(y1)s::real[], %(h)s::int8[]) as t(id, no, kind, x0, y0, x1, y1, h)
"""


def mixed_hashes(rng, real: np.ndarray, n: int) -> np.ndarray:
    """80% uniform, 20% near real hashes (7-14 bits flipped: in the same MIH buckets, beyond the radius)."""
    out = rng.integers(0, 2**63, n, dtype=np.int64) ^ (rng.integers(0, 2, n, dtype=np.int64) << 63)
    near = rng.random(n) < 0.2
    if len(real) and near.any():
        base = real[rng.integers(0, len(real), int(near.sum()))].copy()
        for row in range(len(base)):
            for bit in rng.choice(64, int(rng.integers(7, 15)), replace=False):
                base[row] ^= np.int64(1) << np.int64(bit) if bit < 63 else np.int64(-(2**63))
        out[near] = base
    return out


def prepare(args) -> None:
    from engine import db
    from engine.ingest import ingest
    from engine.sources import Item

    files = photos(Path(args.pool))
    with db.connect() as conn:
        if conn.execute("select count(*) as n from images where format <> 'SYNTHETIC'").fetchone()["n"] == 0:
            t = time.perf_counter()
            summary = ingest(conn, [Item(str(Path(f).resolve())) for f in files], workers=args.workers)
            log(f"ingested {summary.added} photos in {time.perf_counter() - t:.0f} s")
        have = conn.execute("select count(*) as n from regions").fetchone()["n"]
        real = np.array([r["h"] for r in conn.execute("select h from regions")], dtype=np.int64)
        need = args.regions - have
        rng = np.random.default_rng(args.seed)
        start = conn.execute("select count(*) as n from images where format = 'SYNTHETIC'").fetchone()["n"]
        log(f"{have} region hashes; adding {max(need, 0)} synthetic ones")
        t = time.perf_counter()
        while need > 0:
            n = min(BATCH, (need + 2) // 3)
            idx = np.arange(start, start + n, dtype=np.int64)
            g, a, b = (mixed_hashes(rng, real, n) for _ in range(3))
            with conn.transaction():
                rows = conn.execute(INSERT_IMAGES, {"i": idx.tolist(), "g": g.tolist(), "a": a.tolist(),
                                                    "b": b.tolist()}).fetchall()
                ids = np.array([r["id"] for r in rows], dtype=np.int64)
                gh = np.array([r["g"] for r in rows], dtype=np.int64)
                r1, r2 = mixed_hashes(rng, real, n), mixed_hashes(rng, real, n)
                x0, y0 = rng.random((2, n)) * 0.5
                x1, y1 = x0 + 0.2 + rng.random(n) * 0.3, y0 + 0.2 + rng.random(n) * 0.3
                conn.execute(INSERT_REGIONS, {
                    "id": np.concatenate([ids] * 3).tolist(), "no": [0] * n + [1] * n + [2] * n,
                    "kind": ["global"] * n + ["picture"] * (2 * n),
                    "x0": np.concatenate([np.zeros(n), x0, x0 / 2]).tolist(),
                    "y0": np.concatenate([np.zeros(n), y0, y0 / 2]).tolist(),
                    "x1": np.concatenate([np.ones(n), x1, x1 / 2 + 0.5]).tolist(),
                    "y1": np.concatenate([np.ones(n), y1, y1 / 2 + 0.5]).tolist(),
                    "h": np.concatenate([gh, r1, r2]).tolist()})
            start += n
            need -= 3 * n
            log(f"  {start} synthetic images, {time.perf_counter() - t:.0f} s")
        conn.execute("analyze images, regions, keypoint_words")
        conn.commit()
        counts = db.status(conn)["counts"]
    log(f"database: {json.dumps(counts)}")


# --- run ------------------------------------------------------------------------------------------
def derived_queries(files: list[Path], n: int, seed: int) -> list[tuple[str, bytes]]:
    """n different query images: each a random crop, resize, mirror or recompression of a pool photo."""
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    out = []
    for k in range(n):
        src = files[k % len(files)]
        im = Image.open(src).convert("RGB")
        kind = rng.choice(["crop", "crop", "resize", "mirror", "jpeg"])
        w, h = im.size
        if kind == "crop":
            side = rng.uniform(0.45, 0.9)
            x0, y0 = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
            im = im.crop((int(x0 * w), int(y0 * h), int((x0 + side) * w), int((y0 + side) * h)))
        elif kind == "resize":
            f = rng.uniform(0.4, 0.9)
            im = im.resize((max(1, int(w * f)), max(1, int(h * f))))
        elif kind == "mirror":
            im = ImageOps.mirror(im)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=rng.randint(60, 92))
        out.append((src.name, buf.getvalue()))
    return out


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p)) if values else float("nan")


async def load(args, queries, stored_ids) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    found = 0
    counter = iter(range(10**9))
    end = time.monotonic() + args.duration
    headers = {"authorization": f"Bearer {args.key}"} if args.key else {}

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal found
        while time.monotonic() < end:
            k = next(counter)
            t = time.perf_counter()
            try:
                if args.endpoint == "matches":
                    r = await session.get(f"/api/images/{stored_ids[k % len(stored_ids)]}/matches")
                    expect = None
                else:
                    name, data = queries[k % len(queries)]
                    r = await session.post("/api/search", files={"file": (name, data, "image/jpeg")})
                    expect = name
                elapsed = time.perf_counter() - t
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if r.status_code != 200:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                continue
            latencies.append(elapsed)
            matches = r.json()["matches"]
            if expect is None or (matches and (matches[0]["uri"] or "").endswith(expect)):
                found += 1

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=args.url, timeout=120, limits=limits, trust_env=False,
                                 headers=headers) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(args.clients)))
        wall = time.monotonic() - started
    ok = len(latencies)
    return {"endpoint": args.endpoint, "clients": args.clients, "duration_s": round(wall, 1), "ok": ok,
            "errors": errors, "searches_per_s": round(ok / wall, 2),
            "p50_ms": round(percentile(latencies, 50) * 1000), "p90_ms": round(percentile(latencies, 90) * 1000),
            "p99_ms": round(percentile(latencies, 99) * 1000), "max_ms": round(max(latencies, default=0) * 1000),
            "top1_is_source": round(found / ok, 3) if ok else None}


def cpu_seconds() -> dict[str, float] | None:
    """CPU time (user + system) so far of the server (processes whose command line says
    `imgsearch serve`, with their children: uvicorn's workers), every process named postgres (any
    other PostgreSQL server on the machine too: stop idle ones), this load generator, and the whole
    machine's busy time; None where /proc is missing (not Linux)."""
    proc = Path("/proc")
    if not (proc / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu, names = {}, {}, {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        pid = int(d.name)
        parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
        names[pid] = (stat[stat.index("(") + 1:stat.rindex(")")], cmdline)
    server = {pid for pid, (_, cmd) in names.items() if "imgsearch serve" in cmd}
    grown = True
    while grown:  # descendants
        more = {pid for pid, ppid in parent.items() if ppid in server} - server
        grown, server = bool(more), server | more
    busy = [int(v) for v in (proc / "stat").read_text().split("\n")[0].split()[1:]]
    return {"server": sum(cpu[p] for p in server),
            "postgres": sum(c for p, c in cpu.items() if names[p][0] == "postgres"),
            "load_generator": sum(os.times()[:2]),
            "machine": (sum(busy) - busy[3] - busy[4]) / tick}  # all but idle and iowait


def run(args) -> None:
    import httpx

    files = photos(Path(args.pool))
    queries = derived_queries(files, args.queries, args.seed) if args.endpoint == "search" else []
    stats = httpx.get(args.url + "/api/stats", trust_env=False, timeout=60,
                      headers={"authorization": f"Bearer {args.key}"} if args.key else {}).json()
    stored_ids = []
    if args.endpoint == "matches":
        page = httpx.get(args.url + "/api/images", params={"limit": 500}, trust_env=False).json()["images"]
        stored_ids = [img["id"] for img in page if img["format"] != "SYNTHETIC"]
    load_before = os.getloadavg()
    log(f"{len(queries)} distinct queries; database {stats['counts']}; load {load_before}")
    cpu_before = cpu_seconds()
    result = asyncio.run(load(args, queries, stored_ids))
    cpu_after = cpu_seconds()
    if cpu_before and cpu_after and result["ok"]:  # CPU ms a search, by where it was spent
        result["cpu_ms_per_search"] = {k: round((cpu_after[k] - cpu_before[k]) * 1000 / result["ok"], 1)
                                       for k in cpu_before}
    result.update({"regions": stats["counts"]["regions"], "images": stats["counts"]["images"],
                   "distinct_queries": len(queries), "cpus": os.cpu_count(),
                   "loadavg_before": [round(x, 2) for x in load_before],
                   "loadavg_after": [round(x, 2) for x in os.getloadavg()]})
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--pool", default=str(REPO / "tests" / "data" / "pool"))
    p.add_argument("--regions", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("--url", default="http://127.0.0.1:8100")
    r.add_argument("--pool", default=str(REPO / "tests" / "data" / "pool"))
    r.add_argument("--clients", type=int, default=16)
    r.add_argument("--duration", type=float, default=60)
    r.add_argument("--queries", type=int, default=1000, help="distinct derived query images made up front")
    r.add_argument("--endpoint", choices=["search", "matches"], default="search")
    r.add_argument("--key", default=os.environ.get("IMGSEARCH_READ_KEY"))
    r.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    prepare(args) if args.step == "prepare" else run(args)


if __name__ == "__main__":
    main()
