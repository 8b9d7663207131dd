#!/usr/bin/env python3
"""The whole search (query fingerprint, lookup, verification, explanation) with N stored images.

    python bench/search.py /work/corpus --sizes 10000,100000 --home /tmp/bench-search [--queries 170]

1. The corpus index (make_corpus.py's ``index/``, ~380 real images) is fingerprinted and stored
   with the engine's own ``store`` (fingerprints cached in HOME).
2. Synthetic images are bulk-loaded (COPY) up to each size. Each one is built from real material
   so that the index sees realistic load, not uniform noise:
     - global pHash and ~1.9 region pHashes: real hashes of the index with 12-24 bits flipped
       (close enough to share MIH chunks with real queries, out of the search radii);
     - 490 ORB keypoints: descriptors drawn from the real stored images with 32-48 bits flipped,
       quantised with the engine's vocabulary (so the visual-word frequencies follow real
       descriptors: common words stay common), random positions, angles and sizes; packed into
       ``image_keypoints`` and posted to ``keypoint_words`` like a real image;
     - other hashes random, no thumbnail.
   Indexes are dropped during the load and re-created with their migration definitions.
3. Queries from the corpus (``--queries``, an even share of every transform) run through
   ``engine.search.search`` in this process, one at a time, warm (each set twice; the second
   pass is timed). Reported: p50/p99 of the whole search and of each stage, candidates found and
   verified, recall@1 against ground truth (a check that scale does not lose results), and the
   size of each table per image.

Results go to stdout (markdown) and --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine import db  # noqa: E402
from engine import keypoints as kpmod  # noqa: E402
from engine.embedded import EmbeddedServer  # noqa: E402
from engine.fingerprint import fingerprint, query_fingerprint  # noqa: E402
from engine.model import Keypoints  # noqa: E402
from engine.search import search  # noqa: E402
from engine.store import store  # noqa: E402

DBNAME = "bench_search"
SYNTH_KEYPOINTS = 490  # postings per stored image measured on the corpus (docs/benchmarks.md)
REGIONS_PER_IMAGE = 1.9  # besides the global pHash
BANK = 2_000_000  # synthetic descriptors quantised once, then sampled per image
# bits flipped in a real descriptor to make a synthetic one: 7% keep their word (11% at 32 bits,
# 5% at 48) and the word frequencies keep the real ones' shape (top 1% of words: 3.2% of the
# postings, real 4.6%; uniform random descriptors would spread evenly)
FLIP_MIN, FLIP_MAX = 32, 48
CHUNK = 5000  # synthetic images per COPY batch
BULK_TABLES = ("regions", "keypoint_words", "images")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


# --- real images -----------------------------------------------------------------------------

def _fp(path: Path):
    import cv2

    cv2.setNumThreads(1)
    return path, fingerprint(path)


def store_real(conn: psycopg.Connection, corpus: Path, home: Path) -> None:
    files = sorted((corpus / "index").iterdir())
    cache = home / "index_fingerprints.pkl"
    if cache.exists():
        fps = pickle.loads(cache.read_bytes())
    else:
        log(f"fingerprinting {len(files)} index images")
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            fps = dict(pool.map(_fp, files, chunksize=4))
        cache.write_bytes(pickle.dumps(fps))
    for path in files:
        store(conn, fps[path], str(path.resolve()))
    conn.commit()


# --- synthetic images ------------------------------------------------------------------------

class Synthesiser:
    def __init__(self, conn: psycopg.Connection, seed: int):
        self.rng = np.random.default_rng(seed)
        # the real images are the ones with thumbnails (synthetic ones have none)
        rows = conn.execute("select r.hash::bigint as h from regions r join images i on i.id = r.image_id "
                            "where i.thumbnail is not null").fetchall()
        self.real_hashes = np.array([r["h"] for r in rows], dtype=np.int64).view(np.uint64)
        descs = [kpmod.from_bytes(r["data"]).descriptors
                 for r in conn.execute("select k.data from image_keypoints k join images i on i.id = k.image_id "
                                       "where i.thumbnail is not null").fetchall()]
        real = np.concatenate(descs)
        pick = real[self.rng.integers(0, len(real), BANK)]
        flips = self._bitmasks(BANK, FLIP_MIN, FLIP_MAX)
        self.bank = pick ^ flips
        log(f"quantising a bank of {BANK:,} synthetic descriptors from {len(real):,} real ones")
        n = BANK
        bank_kp = Keypoints(size=(1024, 683), xy=np.zeros((n, 2), np.float32), scale=np.full(n, 31, np.float32),
                            angle=np.zeros(n, np.float32), descriptors=self.bank)
        self.bank_words = kpmod.words(bank_kp)

    def _bitmasks(self, n: int, kmin: int, kmax: int) -> np.ndarray:
        """n random 256-bit masks with about kmin..kmax bits set (a repeated position cancels), (n, 32) uint8."""
        k = self.rng.integers(kmin, kmax + 1, n)
        mask = np.zeros((n, 32), dtype=np.uint8)
        rows = np.arange(n)
        for j in range(kmax):
            pos = self.rng.integers(0, 256, n)
            on = j < k
            mask[rows[on], pos[on] // 8] ^= (1 << (pos[on] % 8)).astype(np.uint8)
        return mask

    def _near_hashes(self, n: int) -> list[str]:
        base = self.real_hashes[self.rng.integers(0, len(self.real_hashes), n)]
        k = self.rng.integers(12, 25, n)
        out = []
        for b, kk in zip(base.tolist(), k.tolist(), strict=True):
            mask = 0
            for bit in self.rng.choice(64, kk, replace=False).tolist():
                mask |= 1 << bit
            out.append(format(b ^ mask, "064b"))
        return out

    def _random_bits(self, n: int, bits: int) -> list[str]:
        raw = self.rng.integers(0, 2, (n, bits), dtype=np.uint8)
        return ["".join(map(str, row)) for row in raw.tolist()]

    def load(self, conn: psycopg.Connection, n: int) -> None:
        rng = self.rng
        first = conn.execute("select coalesce(max(id), 0) + 1 as id from images").fetchone()["id"]
        phash = self._near_hashes(n)
        ahash, dhash, pdq = self._random_bits(n, 64), self._random_bits(n, 64), self._random_bits(n, 256)
        with conn.cursor() as cur:
            with cur.copy("copy images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, "
                          "pdq_quality) from stdin") as copy:
                for i in range(n):
                    copy.write_row((rng.bytes(32), 1024, 683, "JPEG", 150_000, ahash[i], dhash[i], phash[i],
                                    pdq[i], 90))
            ids = list(range(first, first + n))
            got = cur.execute("select count(*) as n from images where id between %s and %s",
                              (first, first + n - 1)).fetchone()["n"]
            assert got == n, "image ids are not contiguous: another writer?"
            n_regions = rng.poisson(REGIONS_PER_IMAGE, n)
            region_hashes = iter(self._near_hashes(int(n_regions.sum())))
            kinds = ("face", "picture", "shape", "cutout")
            with cur.copy("copy regions (image_id, region_no, kind, x0, y0, x1, y1, hash) from stdin") as copy:
                for i, image_id in enumerate(ids):
                    copy.write_row((image_id, 0, "global", 0.0, 0.0, 1.0, 1.0, phash[i]))
                    for no in range(1, int(n_regions[i]) + 1):
                        x0, y0 = rng.random(2) * 0.5
                        copy.write_row((image_id, no, kinds[int(rng.integers(0, 4))], float(x0), float(y0),
                                        float(x0) + 0.4, float(y0) + 0.4, next(region_hashes)))
            with cur.copy("copy image_keypoints (image_id, data) from stdin") as kcopy:
                word_rows = []
                for image_id in ids:
                    pick = rng.integers(0, BANK, SYNTH_KEYPOINTS)
                    kp = Keypoints(size=(768, 512),
                                   xy=(rng.random((SYNTH_KEYPOINTS, 2)) * (767, 511)).astype(np.float32),
                                   scale=(31 * 1.2 ** rng.integers(0, 8, SYNTH_KEYPOINTS)).astype(np.float32),
                                   angle=(rng.random(SYNTH_KEYPOINTS) * 360).astype(np.float32),
                                   descriptors=self.bank[pick])
                    kcopy.write_row((image_id, kpmod.to_bytes(kp)))
                    post_angle = np.rint(kp.angle * 256 / 360).astype(np.int64) % 256
                    post_level = np.rint(2 * np.log(kp.scale / 31) / np.log(kpmod.SCALE_FACTOR)).astype(np.int64)
                    word_rows.append((self.bank_words[pick], image_id, post_angle, post_level))
            with cur.copy("copy keypoint_words (word, image_id, angle, level) from stdin") as copy:
                for words, image_id, angles, levels in word_rows:
                    for w, a, lv in zip(words.tolist(), angles.tolist(), levels.tolist(), strict=True):
                        copy.write_row((w, image_id, a, lv))
        conn.commit()


def index_definitions(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute("select indexname, indexdef from pg_indexes where tablename = any(%s) "
                        "and indexdef not like '%%UNIQUE%%'", (list(BULK_TABLES),)).fetchall()
    return [(r["indexname"], r["indexdef"]) for r in rows]


def grow(conn: psycopg.Connection, synth: Synthesiser, target: int) -> float:
    """Bulk-load synthetic images until `target` images are stored; seconds taken."""
    have = conn.execute("select count(*) as n from images").fetchone()["n"]
    if have >= target:
        return 0.0
    t = time.perf_counter()
    defs = index_definitions(conn)
    for name, _ in defs:
        conn.execute(sql.SQL("drop index {}").format(sql.Identifier(name)))
    conn.commit()
    while have < target:
        n = min(CHUNK, target - have)
        synth.load(conn, n)
        have += n
        log(f"  {have:,} images")
    log("re-creating indexes")
    conn.execute("set maintenance_work_mem = '1GB'")
    for _, definition in defs:
        conn.execute(definition)
    conn.commit()
    conn.execute("analyze")
    conn.commit()
    return time.perf_counter() - t


# --- queries ---------------------------------------------------------------------------------

def pick_queries(corpus: Path, n: int, seed: int) -> list[dict]:
    truth = json.loads((corpus / "truth.json").read_text())["queries"]
    by_t = defaultdict(list)
    for q in truth:
        by_t[q["transform"]].append(q)
    rng = np.random.default_rng(seed)
    per = max(1, n // len(by_t))
    out = []
    for t in sorted(by_t):
        items = by_t[t]
        out += [items[i] for i in rng.permutation(len(items))[:per]]
    return out


def run_queries(conn: psycopg.Connection, corpus: Path, queries: list[dict]) -> dict:
    uri_of = {}
    for r in conn.execute("select image_id, uri from image_uris").fetchall():
        uri_of[r["uri"]] = r["image_id"]
    qfps = {}
    for q in queries:  # warm-up pass (also fills the OS and buffer caches)
        path = corpus / "queries" / q["query"]
        qfps[q["query"]] = query_fingerprint(path)
        search(conn, qfps[q["query"]])
    rows = []
    for q in queries:
        path = corpus / "queries" / q["query"]
        stats: dict = {}
        t0 = time.perf_counter()
        qfp = query_fingerprint(path)
        t1 = time.perf_counter()
        matches = search(conn, qfp, stats=stats)
        t2 = time.perf_counter()
        truth = {uri_of.get(str((corpus / "index" / s["file"]).resolve())) for s in q["sources"]}
        top = matches[0].id if matches else None
        rows.append({"query": q["query"], "transform": q["transform"], "fingerprint": t1 - t0,
                     "search": t2 - t1, "total": t2 - t0, **stats,
                     "hit1": (top in truth) if q["sources"] else (top is None)})
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    def ms(key):
        vals = [r.get(key, 0.0) * 1000 for r in rows]
        return {"p50": round(pct(vals, 50), 1), "p99": round(pct(vals, 99), 1), "mean": round(statistics.mean(vals), 1)}

    out = {k: ms(k) for k in ("total", "fingerprint", "search", "lookup", "details", "verify")}
    out["candidates"] = round(statistics.mean(r.get("candidates", 0) for r in rows), 1)
    out["verified"] = round(statistics.mean(r.get("verified", 0) for r in rows), 1)
    out["recall@1"] = round(statistics.mean(r["hit1"] for r in rows), 3)
    by_t = defaultdict(list)
    for r in rows:
        by_t[r["transform"]].append(r["hit1"])
    out["recall@1_by_transform"] = {t: round(statistics.mean(v), 2) for t, v in sorted(by_t.items())}
    out["queries"] = len(rows)
    return out


def table_sizes(conn: psycopg.Connection) -> dict:
    n = conn.execute("select count(*) as n from images").fetchone()["n"]
    out = {"images": n}
    for t in ("images", "regions", "image_keypoints", "keypoint_words", "image_uris"):
        size = conn.execute("select pg_total_relation_size(%s::regclass) as b", (t,)).fetchone()["b"]
        out[t + "_bytes_per_image"] = round(size / n)
    out["database_bytes"] = conn.execute("select pg_database_size(current_database()) as b").fetchone()["b"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--sizes", default="100000", help="stored image counts to measure at, ascending")
    ap.add_argument("--home", type=Path, default=Path("/tmp/bench-search"))
    ap.add_argument("--queries", type=int, default=170)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep an existing database and grow it")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-search.json"))
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    args.home.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(args.home)
    server.ensure_running()
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        exists = admin.execute("select 1 from pg_database where datname = %s", (DBNAME,)).fetchone()
        if exists and not args.reuse:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(DBNAME)))
        if not exists or not args.reuse:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(DBNAME)))
    os.environ["DATABASE_URL"] = server.url(DBNAME)
    results = []
    with db.connect() as conn:
        if conn.execute("select count(*) as n from images").fetchone()["n"] == 0:
            store_real(conn, args.corpus, args.home)
        queries = pick_queries(args.corpus, args.queries, args.seed)
        log(f"{len(queries)} queries; at {conn.execute('select count(*) as n from images').fetchone()['n']} images")
        results.append({"size": "corpus only", **run_queries(conn, args.corpus, queries), **table_sizes(conn)})
        synth = None
        for size in [int(s) for s in args.sizes.split(",")]:
            have = conn.execute("select count(*) as n from images").fetchone()["n"]
            synth = synth or (Synthesiser(conn, args.seed) if have < size else None)
            load_s = grow(conn, synth, size)
            log(f"{size:,} images (load {load_s:.0f} s); querying")
            results.append({"size": size, "load_s": round(load_s), **run_queries(conn, args.corpus, queries),
                            **table_sizes(conn)})
    args.out.write_text(json.dumps(results, indent=2))
    print("| stored images | total p50 | p99 | fingerprint p50 | lookup p50 | p99 | verify p50 | p99 | "
          "candidates | verified | recall@1 | DB size |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['images']:,} | {r['total']['p50']} | {r['total']['p99']} | {r['fingerprint']['p50']} | "
              f"{r['lookup']['p50']} | {r['lookup']['p99']} | {r['verify']['p50']} | {r['verify']['p99']} | "
              f"{r['candidates']} | {r['verified']} | {r['recall@1']} | {r['database_bytes'] / 2**30:.2f} GB |")
    print()
    print("bytes per image:", {k: v for k, v in results[-1].items() if k.endswith("_per_image")})
    print("recall@1 by transform (last size):", results[-1]["recall@1_by_transform"])


if __name__ == "__main__":
    main()
