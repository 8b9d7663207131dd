#!/usr/bin/env python3
"""Scale out: the search's lookup on 3 shards x N region hashes next to 1 server x 3N.

Both layouts hold the same synthetic collection: images with pseudo-random 64-bit pHashes (a
hash of the id: the same rows in both layouts) and 3 rows of ``regions`` each (the global hash
and two regions), made server-side by generate_series,
plus, for each query image, stored hashes planted 2-4 bits from its own (so there are hits to
find and verify). Query images are real photos (tests/data/pool): their fingerprints give the
8 dihedral global pHashes at radius 10 (8 at r = 8), the region hashes at r = 6, and ~1000 visual
words (the collection has no postings: this measures the hash lookup, the part that grows with
the number of region hashes; docs/benchmarks.md has the word step's own figures).

Measured per query (the same candidates in every layout, checked):
  one       engine.search.lookup on the single server
  fanout    the same lookup run on every shard at once, merged (engine.fanout: how searches run)
  fdw       the same lookup through the coordinator's postgres_fdw partitions (--fdw-queries of
            them: it is slow, one remote round trip per query word and shard)
Wall time per query (median, p90), the client's CPU, and the servers' CPU (user+system of
every backend of the bench's postmasters, from /proc), with the load average beside them.

Usage:
  python bench/scale.py --per-shard 1000000 --home /tmp/bench-scale   # 3 x 1M next to 1 x 3M
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from engine import db, fanout, shards  # noqa: E402
from engine import search as searchmod  # noqa: E402
from engine.embedded import EmbeddedServer  # noqa: E402
from engine.fingerprint import query_fingerprint  # noqa: E402

POOL = REPO / "tests" / "data" / "pool"
REGIONS_PER_IMAGE = 3
CLK = os.sysconf("SC_CLK_TCK")

GENERATE = """
insert into images (id, sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality)
overriding system value
select g, sha256(int8send(g)), 640, 480, 'jpeg', 50000, h, h, h, (h || h || h || h)::bit(256), 90
from (select g, hashint8extended(g, 1)::bit(64) as h
      from generate_series(%(first)s::bigint, %(last)s::bigint) g) t
"""
GENERATE_REGIONS = """
insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash)
select i.id, r, case r when 0 then 'global' else 'picture' end, 0, 0, 1, 1,
       case r when 0 then i.phash
              else hashint8extended(i.id * 8 + r, 2)::bit(64) end
from images i cross join generate_series(0, %(regions)s - 1) r
where i.id between %(first)s and %(last)s
"""
PLANT = """
insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash)
select %(image_id)s, 100 + n, 'picture', 0, 0, 1, 1, (h::bit(64) # %(mask)s::bit(64))
from unnest(%(hashes)s::int8[]) with ordinality as t(h, n)
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def backend_cpu(servers: list[EmbeddedServer]) -> float:
    """Seconds of CPU used so far by every child (backend) of these servers' postmasters."""
    parents = set()
    for s in servers:
        pid_file = s.pgdata / "postmaster.pid"
        if pid_file.exists():
            parents.add(int(pid_file.read_text().split()[0]))
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in parents:
            total += int(fields[11]) + int(fields[12])
    return total / CLK


def fresh(server: EmbeddedServer, name: str) -> str:
    server.ensure_running()
    with psycopg.connect(server.url("postgres"), autocommit=True) as c:
        c.execute(f"drop database if exists {name} with (force)")
        c.execute(f"create database {name}")
    return server.url(name)


def fill(url: str, first: int, count: int) -> None:
    """count images (ids first..), REGIONS_PER_IMAGE region hashes each, indexes built after."""
    with psycopg.connect(url, autocommit=True) as c:
        idx = c.execute("select indexdef, indexname from pg_indexes where tablename in ('images', 'regions') "
                        "and indexname like '%%mih%%'").fetchall()
        for _, name in idx:
            c.execute(f"drop index {name}")
        step = 200_000
        for a in range(first, first + count, step):
            b = min(a + step, first + count) - 1
            c.execute(GENERATE, {"first": a, "last": b})
            c.execute(GENERATE_REGIONS, {"first": a, "last": b, "regions": REGIONS_PER_IMAGE})
        for definition, _ in idx:
            c.execute(definition)
        c.execute("vacuum analyze images, regions")


def plant(url: str, image_id: int, hashes: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(PLANT, {"image_id": image_id, "hashes": hashes, "mask": "0" * 60 + "1011"})


def candidates(found: dict) -> list:
    return sorted((k, tuple(sorted((h[0].qno, h[3]) for h in c.hash_hits)), c.exact) for k, c in found.items())


def measure(name: str, run, queries: list, servers: list[EmbeddedServer]) -> tuple[dict, list]:
    walls, answers = [], []
    cpu0, srv0, load0 = time.process_time(), backend_cpu(servers), os.getloadavg()[0]
    for q in queries:
        t = time.perf_counter()
        answers.append(candidates(run(q)))
        walls.append(time.perf_counter() - t)
    n = len(queries)
    out = {"layout": name, "queries": n, "wall_ms_median": round(statistics.median(walls) * 1000, 1),
           "wall_ms_p90": round(sorted(walls)[int(0.9 * (n - 1))] * 1000, 1),
           "client_cpu_ms": round((time.process_time() - cpu0) / n * 1000, 1),
           "server_cpu_ms": round((backend_cpu(servers) - srv0) / n * 1000, 1),
           "load": f"{load0:.2f} -> {os.getloadavg()[0]:.2f}"}
    log(json.dumps(out))
    return out, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-shard", type=int, default=1_000_000, help="region hashes per shard")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--fdw-queries", type=int, default=3)
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-scale"))
    ap.add_argument("--reuse", action="store_true", help="keep the databases of a previous run")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scale.json"))
    args = ap.parse_args()

    one = EmbeddedServer(args.home / "one")
    shard_servers = [EmbeddedServer(args.home / f"shard{k}") for k in range(args.shards)]
    images_per_shard = args.per_shard // REGIONS_PER_IMAGE
    files = sorted(POOL.glob("photos/*.jpg"))[:args.queries]
    queries = [query_fingerprint(f.read_bytes(), name=f.name) for f in files]
    if args.reuse:
        one_url, coord_url = one.url("scale_one"), one.url("scale_coordinator")
        for s in shard_servers:
            s.ensure_running()
        one.ensure_running()
    else:
        one_url, coord_url = fresh(one, "scale_one"), fresh(one, "scale_coordinator")
        shard_urls = [fresh(s, "scale_shard") for s in shard_servers]
        with db.raw_connect(one_url) as c:
            db.migrate(c)
        with db.raw_connect(coord_url) as c:
            db.migrate(c)
            for u in shard_urls:
                shards.add(c, u)
            c.commit()
        t = time.perf_counter()
        fill(one_url, 1, images_per_shard * args.shards)
        log(f"one server: {images_per_shard * args.shards} images, {time.perf_counter() - t:.0f} s")
        for k, u in enumerate(shard_urls):
            t = time.perf_counter()
            fill(u, 1 + k * images_per_shard, images_per_shard)  # ids as the single server's, range by shard
            log(f"shard {k}: {images_per_shard} images, {time.perf_counter() - t:.0f} s")
        for qno, q in enumerate(queries):  # hits: the query's hashes, 3 bits off, on one image
            hashes = [h.hash.value - (1 << 64) if h.hash.value >= 1 << 63 else h.hash.value
                      for h in searchmod.query_hashes(q)]
            image_id = 1 + (qno * 7919) % (images_per_shard * args.shards)
            plant(one_url, image_id, hashes)
            plant(shard_urls[(image_id - 1) // images_per_shard], image_id, hashes)
        with db.raw_connect(coord_url) as c:
            shards.sync_statistics(c)
            c.commit()
    servers = [one, *shard_servers]
    results = []
    with db.raw_connect(one_url, autocommit=True) as single, db.raw_connect(coord_url, autocommit=True) as coord:
        sizes = {"one": single.execute("select count(*) as n from regions").fetchone()["n"]}
        fan = fanout.FanoutConnection(coord, shards.list_shards(coord))
        for q in queries[:2]:  # warm the caches and the shard connections
            searchmod.lookup(single, q, searchmod.DEFAULT_RADIUS)
            searchmod.lookup(fan, q, searchmod.DEFAULT_RADIUS)
        r1, a1 = measure("one", lambda q: searchmod.lookup(single, q, searchmod.DEFAULT_RADIUS), queries, servers)
        r2, a2 = measure("fanout", lambda q: searchmod.lookup(fan, q, searchmod.DEFAULT_RADIUS), queries, servers)
        r3, a3 = measure("fdw", lambda q: searchmod.lookup(coord, q, searchmod.DEFAULT_RADIUS),
                         queries[:args.fdw_queries], servers)
        results = [r1, r2, r3]
        assert a1 == a2 and a1[:args.fdw_queries] == a3, "the layouts found different candidates"
        hits = sum(1 for a in a1 if a)
    report = {"regions_one_server": sizes["one"], "regions_per_shard": args.per_shard, "shards": args.shards,
              "queries_with_hits": hits, "cpus": os.cpu_count(), "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
