#!/usr/bin/env python3
"""Exact Hamming-radius search over 64-bit hashes in PostgreSQL: a strategy benchmark.

The query measured: "every stored region hash within r bits of any of the query image's
hashes", one SQL statement (one round trip, arrays bound as parameters) per query image.

Strategies, all on the same table and the same query sets, in one run:

  numpy   brute force XOR + np.bitwise_count over the hashes in memory (also the ground truth)
  seq     sequential scan, bit_count(hash # q) on bit(64) or bit_count((h # q)::bit(64)) on
          bigint, parallel workers on/off
  hnsw    pgvector HNSW (bit_hamming_ops) k-NN per query hash, then filtered by r (approximate:
          recall is reported), only for sizes <= --hnsw-max
  mih     exact multi-index hashing: the 64 bits cut into m chunks, one covering btree per
          chunk; probes enumerated in Python, candidates verified in SQL. A variant is
          "m<m>:<scheme>:<shape>[+skip]":
            scheme  ph     classic pigeonhole, every chunk probed within floor(r/m) bits
                    gph    generalised pigeonhole: thresholds t_i with sum t_i >= r-m+1
                           (if every chunk differed by more than t_i, d >= sum(t_i)+m > r)
                    adapt  gph with per-query-hash thresholds chosen from bucket counts
                           (a chunk may get -1 = not probed), so hot buckets are avoided
            shape   join     unnest(probe, j, qhash) JOIN regions ON chunk = probe, verified
                             against that query hash; UNION across chunks dedupes (the
                             planner picks the join method)
                    lateral  the same as a forced nested loop: one index-only descent per probe
                             (CROSS JOIN LATERAL (... WHERE chunk = p.v OFFSET 0))
                    anyjoin  join, plus chunk = ANY(distinct probes) on the index side, so the
                             index is read in one sorted pass and merge/hash-joined to probes
                    any      chunk = ANY(distinct probes), candidates UNIONed, then verified
                             against every query hash
            +skip   drop probes whose bucket is empty (needs cached bucket counts)
            +par    make the planner take parallel plans (parallel_*_cost = 0)

A radius is an int, or "G/R": the first 8 hashes of each query image (stand-ins for the
global pHash and its rotations) searched within G bits, the region hashes within R.

Usage:
  python bench/search_index.py --pool /work/shared/eval/pool --sizes 1000000,10000000 \\
      --home /work/benchpg

Results are printed as tables and written as JSON (with EXPLAIN texts) to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from engine.embedded import EmbeddedServer  # noqa: E402

TABLE = "regions"
ROW_BITS = 40  # result keys: (j << ROW_BITS) | row
T_MAX = 4  # largest per-chunk probe radius enumerated
N_GLOBAL = 8  # a mixed radius "G/R": the first N_GLOBAL hashes of a query image at G bits, the others at R


def rvec(r, nh: int) -> np.ndarray:
    """Per-hash radii of one query image for a radius token: 8, or "10/6" (mixed)."""
    if isinstance(r, str):
        g, rest = (int(x) for x in r.split("/"))
        v = np.full(nh, rest, np.int64)
        v[:N_GLOBAL] = g
        return v
    return np.full(nh, r, np.int64)


def parse_radius(tok: str):
    return tok if "/" in tok else int(tok)
# the variants of docs/bench-index.md worth re-running; see the module doc for the others
DEFAULT_MIH = ("m4:ph:lateral,m4:gph:lateral,m4:gph:anyjoin,m4:adapt:lateral,m3:gph:lateral,m3:gph:anyjoin,"
               "m3:adapt:lateral,m5:gph:lateral")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- binary array parameters from numpy (a list of 100k Python ints costs ~10 ms to adapt) ---
class _NpArray:
    __slots__ = ("a",)
    elem_oid = 0
    dt = ""
    size = 0

    def __init__(self, a):
        self.a = np.asarray(a)


class I2(_NpArray):
    elem_oid, dt, size = 21, ">i2", 2


class I4(_NpArray):
    elem_oid, dt, size = 23, ">i4", 4


class I8(_NpArray):
    elem_oid, dt, size = 20, ">i8", 8


def _dumper(cls, array_oid):
    class NpArrayDumper(Dumper):
        format = Format.BINARY
        oid = array_oid

        def dump(self, obj):
            a = obj.a
            if len(a) == 0:
                return struct.pack(">iii", 0, 0, cls.elem_oid)
            body = np.empty(len(a), dtype=[("l", ">i4"), ("v", cls.dt)])
            body["l"] = cls.size
            body["v"] = a
            return struct.pack(">iiiii", 1, 0, cls.elem_oid, len(a), 1) + body.tobytes()

    return NpArrayDumper


def register_arrays(conn: psycopg.Connection) -> None:
    for cls, oid in ((I2, 1005), (I4, 1007), (I8, 1016)):
        conn.adapters.register_dumper(cls, _dumper(cls, oid))


# --- data -------------------------------------------------------------------------------------
def real_hashes(pool: Path, boxes: int, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """pHash (imagehash) of every pool photo and of `boxes` random crops of it."""
    if cache.exists():
        z = np.load(cache)
        if int(z["boxes"]) == boxes and int(z["seed"]) == seed:
            return z["hashes"], z["photo"]
    import imagehash
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    files = sorted(p for p in (pool / "photos").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    hashes, photo = [], []

    def ph(im) -> int:
        return int(np.packbits(imagehash.phash(im).hash.flatten()).view(">u8")[0])

    t0 = time.perf_counter()
    for pi, f in enumerate(files):
        with Image.open(f) as im0:
            im = ImageOps.exif_transpose(im0).convert("RGB")
        im.thumbnail((1024, 1024))
        w0, h0 = im.size
        hashes.append(ph(im))
        photo.append(pi)
        for _ in range(boxes):
            w = max(16, int(w0 * rng.uniform(0.15, 0.9)))
            h = max(16, int(h0 * rng.uniform(0.15, 0.9)))
            x, y = int(rng.integers(0, w0 - w + 1)), int(rng.integers(0, h0 - h + 1))
            hashes.append(ph(im.crop((x, y, x + w, y + h))))
            photo.append(pi)
    log(f"real pHashes: {len(hashes)} from {len(files)} photos in {time.perf_counter() - t0:.0f}s")
    hs, pa = np.array(hashes, dtype=np.uint64), np.array(photo, dtype=np.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, hashes=hs, photo=pa, boxes=boxes, seed=seed)
    return hs, pa


def flip_random_bits(rng, x: np.ndarray, kmin: int, kmax: int) -> np.ndarray:
    """x with 1 <= k <= kmax bits flipped, k uniform in [kmin, kmax] (positions drawn with replacement)."""
    k = rng.integers(kmin, kmax + 1, len(x))
    mask = np.zeros(len(x), np.uint64)
    for step in range(kmax):
        pos = rng.integers(0, 64, len(x)).astype(np.uint64)
        mask |= np.where(step < k, np.uint64(1) << pos, np.uint64(0))
    return x ^ mask


def make_dataset(n: int, real: np.ndarray, clustered_frac: float, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng([seed, n])
    n_real = min(len(real), n)
    n_cl = int(round(clustered_frac * n))
    n_un = n - n_real - n_cl
    clustered = flip_random_bits(rng, real[rng.integers(0, len(real), n_cl)], 1, 12)
    uniform = rng.integers(0, 2**64, n_un, dtype=np.uint64, endpoint=False)
    h = np.concatenate([real[:n_real], clustered, uniform])
    rng.shuffle(h)
    return h, {"real": n_real, "clustered": n_cl, "uniform": n_un}


def make_queries(real, photo, nq: int, per_q: int, n_rand: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    photos = np.unique(photo)
    out = np.empty((nq, per_q), np.uint64)
    for q in range(nq):
        idx = np.flatnonzero(photo == rng.choice(photos))
        k = per_q - n_rand
        hs = real[rng.choice(idx, k, replace=len(idx) < k)].copy()
        for i in range(k):
            flips = int(rng.integers(0, 7))  # 0..6 bits, distinct positions
            if flips:
                pos = rng.choice(64, flips, replace=False).astype(np.uint64)
                hs[i] ^= np.bitwise_or.reduce(np.uint64(1) << pos)
        out[q, :k] = hs
        out[q, k:] = rng.integers(0, 2**64, n_rand, dtype=np.uint64)
    return out


# --- chunks -------------------------------------------------------------------------------------
def widths(m: int) -> list[int]:
    base, extra = divmod(64, m)
    return [base + 1] * extra + [base] * (m - extra)


def chunk_vals(x: np.ndarray, m: int) -> list[np.ndarray]:
    out, shift = [], 64
    for w in widths(m):
        shift -= w
        out.append(((x >> np.uint64(shift)) & np.uint64((1 << w) - 1)).astype(np.int64))
    return out


def stored(v: np.ndarray, w: int) -> np.ndarray:
    """How a w-bit chunk value is stored: smallint (16 bits reinterpreted as signed) or integer."""
    if w == 16:
        return v.astype(np.uint16).view(np.int16)
    return v.astype(np.int16) if w < 16 else v.astype(np.int32)


def pg_chunk_type(w: int) -> str:
    return "smallint" if w <= 16 else "integer"


_MASKS: dict[int, tuple[np.ndarray, list[int]]] = {}


def masks(w: int) -> tuple[np.ndarray, list[int]]:
    """All w-bit masks of weight <= T_MAX, ordered by weight; cnt[t] = how many have weight <= t."""
    if w not in _MASKS:
        ms, cnt = [], []
        for k in range(T_MAX + 1):
            ms.extend(sum(1 << b for b in c) for c in itertools.combinations(range(w), k))
            cnt.append(len(ms))
        _MASKS[w] = (np.array(ms, np.int64), cnt)
    return _MASKS[w]


# --- ground truth -------------------------------------------------------------------------------
def numpy_search(h: np.ndarray, qh: np.ndarray, r: int, buf: np.ndarray, buf8: np.ndarray):
    js, rows, ds = [], [], []
    for j, q in enumerate(qh):
        np.bitwise_xor(h, q, out=buf)
        np.bitwise_count(buf, out=buf8)
        idx = np.flatnonzero(buf8 <= r)
        js.append(np.full(len(idx), j, np.int64))
        rows.append(idx)
        ds.append(buf8[idx].astype(np.int8))
    return np.concatenate(js), np.concatenate(rows), np.concatenate(ds)


class Truth:
    def __init__(self, nh: int):
        self.nh = nh
        self.items: list[tuple[np.ndarray, np.ndarray]] = []  # per query: keys, distances

    def add(self, j, rows, d):
        self.items.append((((j << ROW_BITS) | rows).astype(np.int64), d))

    def keys(self, qi: int, r: int) -> np.ndarray:
        k, d = self.items[qi]
        return np.sort(k[d <= rvec(r, self.nh)[k >> ROW_BITS]])


def keys_of(rows) -> np.ndarray:
    if not rows:
        return np.empty(0, np.int64)
    a = np.array([(t[0], t[1], t[2]) for t in rows], dtype=np.int64)
    return (a[:, 0] << ROW_BITS) | (a[:, 1] * 16 + a[:, 2])


# --- database -----------------------------------------------------------------------------------
def connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    register_arrays(conn)
    conn.execute("set jit = off")
    conn.execute("set work_mem = '64MB'")
    return conn


def set_parallel(conn, on: bool) -> None:
    """Make the planner take parallel plans whenever it can (on), or restore the defaults."""
    for k in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
              "min_parallel_index_scan_size"):
        conn.execute(f"set {k} = 0" if on else f"reset {k}")


def rel_mb(conn, name: str) -> float:
    return conn.execute("select pg_relation_size(%s::regclass)", (name,)).fetchone()[0] / 2**20


def load_table(conn, h: np.ndarray, ms: list[int]) -> dict:
    cols = ["image_id bigint not null", "region_no smallint not null", "hash bit(64) not null", "h bigint not null"]
    names = ["image_id", "region_no", "hash", "h"]
    dt = [("nf", ">i2"), ("l0", ">i4"), ("image_id", ">i8"), ("l1", ">i4"), ("region_no", ">i2"),
          ("l2", ">i4"), ("nbits", ">i4"), ("hash", ">u8"), ("l3", ">i4"), ("h", ">i8")]
    chunk_cols = []
    for m in ms:
        for i, w in enumerate(widths(m)):
            c = f"m{m}_{i}"
            cols.append(f"{c} {pg_chunk_type(w)} not null")
            names.append(c)
            dt += [(f"l_{c}", ">i4"), (c, ">i2" if w <= 16 else ">i4")]
            chunk_cols.append((m, i, w, c))
    conn.execute(f"drop table if exists {TABLE}")
    conn.execute(f"create table {TABLE} ({', '.join(cols)})")
    t0 = time.perf_counter()
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    s0 = sched(pid)
    step = 1_000_000
    with conn.cursor() as cur, cur.copy(f"copy {TABLE} ({', '.join(names)}) from stdin (format binary)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for s in range(0, len(h), step):
            x = h[s:s + step]
            rows = np.arange(s, s + len(x), dtype=np.int64)
            rec = np.empty(len(x), dtype=dt)
            rec["nf"] = len(names)
            rec["l0"], rec["image_id"] = 8, rows // 16
            rec["l1"], rec["region_no"] = 2, rows % 16
            rec["l2"], rec["nbits"], rec["hash"] = 12, 64, x
            rec["l3"], rec["h"] = 8, x.view(np.int64)
            for m in ms:
                for i, v in enumerate(chunk_vals(x, m)):
                    c = f"m{m}_{i}"
                    w = widths(m)[i]
                    rec[f"l_{c}"] = 2 if w <= 16 else 4
                    rec[c] = stored(v, w)
            cp.write(rec.tobytes())
        cp.write(struct.pack(">h", -1))
    load_s = time.perf_counter() - t0
    log(f"COPY {len(h)} rows in {load_s:.1f}s")
    return {"load_s": load_s, "load_cpu_s": (sched(pid)[0] - s0[0]) / 1e9, "table_mb": rel_mb(conn, TABLE),
            "chunk_cols": chunk_cols}


def build_indexes(conn, ms: list[int], hnsw: bool) -> dict:
    """Build every index; build_s is wall time, cpu_s the leader backend's CPU (parallel workers not counted)."""
    out = {}
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    conn.execute("set maintenance_work_mem = '2GB'")
    for m in ms:
        tot_s, tot_mb, s0 = 0.0, 0.0, sched(pid)
        for i in range(m):
            name = f"{TABLE}_m{m}_{i}"
            t0 = time.perf_counter()
            conn.execute(f"create index {name} on {TABLE} (m{m}_{i}) include (h, image_id, region_no)")
            tot_s += time.perf_counter() - t0
            tot_mb += rel_mb(conn, name)
        out[f"mih m={m}"] = {"build_s": tot_s, "size_mb": tot_mb, "indexes": m,
                             "cpu_s": (sched(pid)[0] - s0[0]) / 1e9}
        log(f"MIH m={m}: {m} covering btrees in {tot_s:.1f}s, {tot_mb:.0f} MB")
    if hnsw:
        t0, s0 = time.perf_counter(), sched(pid)
        conn.execute(f"create index {TABLE}_hnsw on {TABLE} using hnsw (hash bit_hamming_ops)")
        s = time.perf_counter() - t0
        out["hnsw"] = {"build_s": s, "size_mb": rel_mb(conn, f"{TABLE}_hnsw"), "indexes": 1,
                       "cpu_s": (sched(pid)[0] - s0[0]) / 1e9}
        log(f"HNSW in {s:.1f}s, {out['hnsw']['size_mb']:.0f} MB")
    conn.execute("reset maintenance_work_mem")
    t0, s0 = time.perf_counter(), sched(pid)
    conn.execute(f"vacuum (analyze) {TABLE}")
    out["vacuum analyze"] = {"build_s": time.perf_counter() - t0, "size_mb": 0.0, "indexes": 0,
                             "cpu_s": (sched(pid)[0] - s0[0]) / 1e9}
    conn.execute("create extension if not exists pg_prewarm")
    conn.execute("select pg_prewarm(c.oid, 'read') from pg_class c where c.relname like %s and c.relkind in ('r','i')",
                 (TABLE + "%",))
    return out


# --- SQL ----------------------------------------------------------------------------------------
SEQ_BIT = f"""
select q.j - 1, r.image_id, r.region_no, bit_count(r.hash # q.qb) as d
from {TABLE} r
join (select x::bit(64) as qb, j from unnest(%(qh)b::int8[]) with ordinality as u(x, j)) q
  on bit_count(r.hash # q.qb) <= %(r)s"""

SEQ_BIGINT = f"""
select q.j - 1, r.image_id, r.region_no, bit_count((r.h # q.qh)::bit(64)) as d
from {TABLE} r
join unnest(%(qh)b::int8[]) with ordinality as q(qh, j)
  on bit_count((r.h # q.qh)::bit(64)) <= %(r)s"""

HNSW = f"""
select q.j - 1, x.image_id, x.region_no, x.d
from (select u.x::bit(64) as qb, u.j from unnest(%(qh)b::int8[]) with ordinality as u(x, j)) q
cross join lateral (
  select r.image_id, r.region_no, r.hash <~> q.qb as d
  from {TABLE} r order by r.hash <~> q.qb limit %(k)s
) x
where x.d <= %(r)s"""


class Mih:
    def __init__(self, spec: str, counts: dict[int, list[np.ndarray]], alpha: float):
        m, self.scheme, shape = spec.split(":")
        self.m = int(m[1:])
        self.shape, *flags = shape.split("+")
        self.skip = "skip" in flags or self.scheme == "adapt"
        self.par = "par" in flags
        self.spec, self.w = spec, widths(self.m)
        self.counts = counts[self.m]
        self.alpha = alpha
        self.sql = self._sql()

    def _sql(self) -> sql.Composed:
        branches = []
        for i, w in enumerate(self.w):
            col = sql.Identifier(f"m{self.m}_{i}")
            ty = sql.SQL(pg_chunk_type(w))
            v, j, q, u = (sql.Placeholder(f"{p}{i}", PyFormat.BINARY) for p in "vjqu")
            if self.shape == "lateral":
                branches.append(sql.SQL(
                    "select p.j, r.image_id, r.region_no, bit_count((r.h # p.qh)::bit(64)) as d\n"
                    "from unnest({v}::{ty}[], {j}::int2[], {q}::int8[]) as p(v, j, qh)\n"
                    f"cross join lateral (select image_id, region_no, h from {TABLE} where {{col}} = p.v offset 0) r\n"
                    "where bit_count((r.h # p.qh)::bit(64)) <= (%(rr)b::int2[])[p.j + 1]").format(
                        v=v, j=j, q=q, ty=ty, col=col))
            elif self.shape in ("join", "anyjoin"):
                extra = sql.SQL(" and r.{col} = any({u}::{ty}[])").format(col=col, u=u, ty=ty) \
                    if self.shape == "anyjoin" else sql.SQL("")
                branches.append(sql.SQL(
                    "select p.j, r.image_id, r.region_no, bit_count((r.h # p.qh)::bit(64)) as d\n"
                    "from unnest({v}::{ty}[], {j}::int2[], {q}::int8[]) as p(v, j, qh)\n"
                    f"join {TABLE} r on r.{{col}} = p.v\n"
                    "where bit_count((r.h # p.qh)::bit(64)) <= (%(rr)b::int2[])[p.j + 1]{extra}").format(
                    v=v, j=j, q=q, ty=ty, col=col, extra=extra))
            else:
                branches.append(sql.SQL(f"select image_id, region_no, h from {TABLE} "
                                        "where {col} = any({u}::{ty}[])").format(col=col, u=u, ty=ty))
        body = sql.SQL("\nunion\n").join(branches)
        if self.shape == "any":
            return sql.SQL(
                "select q.j - 1, c.image_id, c.region_no, bit_count((c.h # q.qh)::bit(64)) as d\n"
                "from ({body}) c\n"
                "join unnest(%(qh)b::int8[]) with ordinality as q(qh, j)\n"
                "  on bit_count((c.h # q.qh)::bit(64)) <= (%(rr)b::int2[])[q.j]").format(body=body)
        return body

    def thresholds(self, cv: list[np.ndarray], r: int) -> np.ndarray:
        m, nh = self.m, len(cv[0])
        if self.scheme == "ph":
            return np.full((nh, m), r // m)
        s = r - m + 1  # sum t_i >= s
        if self.scheme == "gph":
            base, extra = divmod(s, m)
            return np.tile(np.array([base + 1] * extra + [base] * (m - extra)), (nh, 1))
        # adapt: per hash, t_i in -1..T_MAX with sum t_i = s minimising probes*alpha + candidates
        cost = np.zeros((nh, m, T_MAX + 2))  # index t+1
        for i, w in enumerate(self.w):
            mk, cnt = masks(w)
            c = self.counts[i][cv[i][:, None] ^ mk[None, :]]
            cum = np.cumsum(c, axis=1)
            for t in range(T_MAX + 1):
                cost[:, i, t + 1] = cum[:, cnt[t] - 1] + self.alpha * np.count_nonzero(c[:, :cnt[t]], axis=1)
        comps = _compositions(s + m, m, T_MAX + 1)  # t+1 >= 0, sum = s + m
        tot = sum(cost[:, i, comps[:, i]] for i in range(m))  # (nh, ncomp)
        return comps[np.argmin(tot, axis=1)] - 1

    def params(self, qh: np.ndarray, r) -> tuple[dict, int, int]:
        """Probe arrays for one query image (radius r: int or "G/R"); returns (params, probes, candidates)."""
        cv = chunk_vals(qh, self.m)
        rv = rvec(r, len(qh))
        th = np.empty((len(qh), self.m), np.int64)
        for u in np.unique(rv):
            sel = rv == u
            th[sel] = self.thresholds([c[sel] for c in cv], int(u))
        if th.max() > T_MAX:
            raise ValueError(f"{self.spec}: per-chunk radius {th.max()} > {T_MAX}")
        p = {"rr": I2(rv)}
        nprobe = ncand = 0
        for i, w in enumerate(self.w):
            mk, cnt = masks(w)
            vs, js = [], []
            for t in np.unique(th[:, i]):
                if t < 0:
                    continue
                sel = np.flatnonzero(th[:, i] == t)
                vs.append((cv[i][sel, None] ^ mk[None, :cnt[t]]).ravel())
                js.append(np.repeat(sel, cnt[t]))
            v = np.concatenate(vs) if vs else np.empty(0, np.int64)
            j = np.concatenate(js) if js else np.empty(0, np.int64)
            c = self.counts[i][v]
            if self.skip:
                keep = c > 0
                v, j, c = v[keep], j[keep], c[keep]
            nprobe += len(v)
            ncand += int(c.sum())
            if self.shape == "any":
                p[f"u{i}"] = (I2 if w <= 16 else I4)(stored(np.unique(v), w))
            else:
                p[f"v{i}"] = (I2 if w <= 16 else I4)(stored(v, w))  # join, lateral, anyjoin
                p[f"j{i}"] = I2(j)
                p[f"q{i}"] = I8(qh.view(np.int64)[j])
                if self.shape == "anyjoin":
                    p[f"u{i}"] = (I2 if w <= 16 else I4)(stored(np.unique(v), w))
        if self.shape == "any":
            p["qh"] = I8(qh.view(np.int64))
        return p, nprobe, ncand


def _compositions(total: int, parts: int, cap: int) -> np.ndarray:
    out = [c for c in itertools.product(range(cap + 1), repeat=parts) if sum(c) == total]
    return np.array(out, dtype=np.int64)


# --- measuring ----------------------------------------------------------------------------------
def pct(a, p):
    return float(np.percentile(np.asarray(a) * 1000, p)) if len(a) else float("nan")


def sched(pid: int | None) -> tuple[int, int]:
    """(ns on CPU, ns waiting for a CPU) of a process: the machine is shared, so wall time alone misleads."""
    if pid is None:
        return 0, 0
    with open(f"/proc/{pid}/schedstat") as fh:
        a, b, _ = fh.read().split()
    return int(a), int(b)


def measure(name, r, qids, run, truth: Truth, budget: float, min_q: int, recall_radii=None, warmup=2,
            pid: int | None = None):
    """run(qi) -> (elapsed_s, rows, candidates). Returns one result dict per radius checked.

    Besides wall time, records the CPU time of the query (server backend `pid` + this client) and how
    long the backend waited for a CPU (other work on the machine)."""
    for qi in qids[:warmup]:
        run(qi)
    lat, cand, nrows, cpu, wait = [], [], [], [], []
    radii = recall_radii or [r]
    miss = {rr: 0 for rr in radii}
    extra = {rr: 0 for rr in radii}
    want = {rr: 0 for rr in radii}
    t_start = time.perf_counter()
    for n, qi in enumerate(qids):
        s0, c0 = sched(pid), time.process_time()
        el, rows, c = run(qi)
        s1, c1 = sched(pid), time.process_time()
        cpu.append((s1[0] - s0[0]) / 1e9 + (c1 - c0))
        wait.append((s1[1] - s0[1]) / 1e9)
        lat.append(el)
        cand.append(c)
        got_all = keys_of(rows)
        d_all = np.array([t[3] for t in rows], dtype=np.float64) if rows else np.empty(0)
        j_all = got_all >> ROW_BITS
        for rr in radii:
            ok = d_all <= rvec(rr, truth.nh)[j_all]
            got = np.unique(got_all[ok])
            if len(got) != int(ok.sum()):
                extra[rr] += int(ok.sum()) - len(got)  # duplicates count as extras
            exp = truth.keys(qi, rr)
            want[rr] += len(exp)
            miss[rr] += len(np.setdiff1d(exp, got, assume_unique=True))
            extra[rr] += len(np.setdiff1d(got, exp, assume_unique=True))
        nrows.append(len(rows))
        if time.perf_counter() - t_start > budget and n + 1 >= min_q:
            break
    res = []
    for rr in radii:
        res.append({"strategy": name, "r": rr, "n": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                    "mean_ms": float(np.mean(lat) * 1000), "cand": float(np.mean(cand)), "rows": float(np.mean(nrows)),
                    "cpu_p50_ms": pct(cpu, 50), "cpu_p99_ms": pct(cpu, 99), "wait_mean_ms": float(np.mean(wait) * 1000),
                    "true_pairs": want[rr], "missed": miss[rr], "extra": extra[rr],
                    "recall": 1.0 - miss[rr] / want[rr] if want[rr] else 1.0,
                    "loadavg1": os.getloadavg()[0]})
        log(f"  {name} r={rr}: n={len(lat)} p50={res[-1]['p50_ms']:.1f}ms p99={res[-1]['p99_ms']:.1f}ms "
            f"cpu p50={res[-1]['cpu_p50_ms']:.1f}ms p99={res[-1]['cpu_p99_ms']:.1f}ms "
            f"cand={res[-1]['cand']:.0f} rows={res[-1]['rows']:.0f} missed={miss[rr]} extra={extra[rr]}")
    return res


def explain(conn, query, params) -> str:
    q = sql.SQL("explain (analyze, buffers, costs off) ") + (query if isinstance(query, sql.Composable)
                                                               else sql.SQL(query))
    return "\n".join(r[0] for r in conn.execute(q, params).fetchall())


def run_size(args, url, n, real, photo, queries) -> dict:
    ms = sorted({int(s.split(":")[0][1:]) for s in args.mih_list}) if "mih" in args.strategies else []
    h, mix = make_dataset(n, real, args.clustered_frac, args.seed)
    log(f"N={n}: mix {mix}")
    res = {"n": n, "mix": mix, "results": [], "explain": {}, "builds": {}}
    radii = args.radii
    rmax = max(int(rvec(r, queries.shape[1]).max()) for r in radii)

    # ground truth = the numpy baseline, timed per query image at rmax (the radius does not change its cost)
    truth = Truth(queries.shape[1])
    buf, buf8 = np.empty(len(h), np.uint64), np.empty(len(h), np.uint8)
    lat, cpu = [], []
    for qi in range(len(queries)):
        t0, c0 = time.perf_counter(), time.process_time()
        j, rows, d = numpy_search(h, queries[qi], rmax, buf, buf8)
        lat.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        truth.add(j, rows, d)
    del buf, buf8
    for r in radii:
        pairs = sum(len(truth.keys(qi, r)) for qi in range(len(queries)))
        res["results"].append({"strategy": "numpy brute force", "r": r, "n": len(lat), "p50_ms": pct(lat, 50),
                               "p99_ms": pct(lat, 99), "mean_ms": float(np.mean(lat) * 1000), "cand": 40.0 * n,
                               "cpu_p50_ms": pct(cpu, 50), "cpu_p99_ms": pct(cpu, 99), "wait_mean_ms": float("nan"),
                               "loadavg1": os.getloadavg()[0],
                               "rows": pairs / len(queries), "true_pairs": pairs, "missed": 0, "extra": 0,
                               "recall": 1.0})
    log(f"numpy: p50 {pct(lat, 50):.1f} ms; true pairs/query at r={radii}: "
        f"{[res['results'][i]['rows'] for i in range(len(radii))]}")

    conn = connect(url)
    res["settings"] = {k: conn.execute(f"show {k}").fetchone()[0] for k in
                       ("shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_workers_per_gather",
                        "max_parallel_maintenance_workers", "effective_cache_size", "random_page_cost", "jit")}
    res["server_version"] = conn.execute("show server_version").fetchone()[0]
    res["pgvector"] = conn.execute("select extversion from pg_extension where extname='vector'").fetchone()
    if res["pgvector"] is None:
        conn.execute("create extension if not exists vector")
        res["pgvector"] = conn.execute("select extversion from pg_extension where extname='vector'").fetchone()
    res["pgvector"] = res["pgvector"][0]
    info = load_table(conn, h, ms)
    res["load_s"], res["table_mb"], res["load_cpu_s"] = info["load_s"], info["table_mb"], info["load_cpu_s"]
    do_hnsw = "hnsw" in args.strategies and n <= args.hnsw_max
    res["builds"] = build_indexes(conn, ms, do_hnsw)
    qh_all = [I8(queries[qi].view(np.int64)) for qi in range(len(queries))]
    bpid = conn.execute("select pg_backend_pid()").fetchone()[0]
    all_q = list(range(len(queries)))

    def timed(query, params):
        t0 = time.perf_counter()
        rows = conn.execute(query, params).fetchall()
        return time.perf_counter() - t0, rows

    # --- sequential scans: the radius does not change their cost, so run at rmax and check every radius
    if "seq" in args.strategies:
        seq_q = all_q[: args.seq_queries]
        variants = (("seq bit(64)", SEQ_BIT), ("seq bigint", SEQ_BIGINT)) if n <= 1_000_000 else \
            (("seq bit(64)", SEQ_BIT),)
        for label, query in variants:
            for workers in (2, 0):
                set_parallel(conn, workers > 0)
                conn.execute(f"set max_parallel_workers_per_gather = {workers}")

                def run(qi, query=query):
                    el, rows = timed(query, {"qh": qh_all[qi], "r": rmax})
                    return el, rows, 40 * n
                res["results"] += measure(f"{label} workers={workers}", rmax, seq_q, run, truth, args.seq_budget, 1,
                                          recall_radii=[r for r in radii if r in (8, 10)], warmup=0, pid=bpid)
                if label == "seq bit(64)" and n <= 1_000_000:
                    res["explain"][f"seq bit(64) workers={workers} r={rmax}"] = explain(
                        conn, query, {"qh": qh_all[0], "r": rmax})
        set_parallel(conn, False)
        conn.execute("reset max_parallel_workers_per_gather")

    # --- HNSW
    if do_hnsw:
        for ef in args.ef:
            conn.execute(f"set hnsw.ef_search = {ef}")

            def run(qi, ef=ef):
                el, rows = timed(HNSW, {"qh": qh_all[qi], "r": rmax, "k": ef})
                return el, rows, 40 * ef
            res["results"] += measure(f"hnsw ef_search={ef} limit={ef}", rmax, all_q, run, truth, args.hnsw_budget,
                                      20, recall_radii=[r for r in radii if r in (8, 10)], pid=bpid)
        conn.execute("set hnsw.ef_search = 100")
        res["explain"]["hnsw ef_search=100"] = explain(conn, HNSW, {"qh": qh_all[0], "r": rmax, "k": 100})
        conn.execute("reset hnsw.ef_search")

    # --- MIH
    if "mih" in args.strategies:
        counts = {}
        for m in ms:
            counts[m] = [np.bincount(v, minlength=1 << w) for v, w in zip(chunk_vals(h, m), widths(m), strict=True)]
        for spec in args.mih_list:
            mih = Mih(spec, counts, args.alpha)
            set_parallel(conn, mih.par)
            for r in radii:
                try:
                    mih.params(queries[0], r)
                except ValueError as exc:
                    log(f"  skip: {exc}")
                    continue

                def run(qi, mih=mih, r=r):
                    t0 = time.perf_counter()
                    p, _, c = mih.params(queries[qi], r)
                    rows = conn.execute(mih.sql, p).fetchall()
                    return time.perf_counter() - t0, rows, c
                out = measure(f"mih {spec}", r, all_q, run, truth, args.budget, args.min_queries, pid=bpid)
                p, nprobe, _ = mih.params(queries[0], r)
                out[0]["probes_q0"] = nprobe
                t0 = time.perf_counter()
                for qi in all_q[:20]:
                    mih.params(queries[qi], r)
                out[0]["enum_ms"] = (time.perf_counter() - t0) / 20 * 1000
                res["results"] += out
                if r in (8, 10):
                    res["explain"][f"mih {spec} r={r}"] = explain(conn, mih.sql, p)
            set_parallel(conn, False)
    conn.close()
    return res


def print_tables(res: dict) -> None:
    n = res["n"]
    print(f"\n=== N = {n:,}  mix {res['mix']}  load {res['load_s']:.1f}s  table {res['table_mb']:.0f} MB")
    print(f"{'build':<22}{'seconds':>10}{'cpu s':>10}{'size MB':>10}")
    for k, b in res["builds"].items():
        print(f"{k:<22}{b['build_s']:>10.1f}{b.get('cpu_s', float('nan')):>10.1f}{b['size_mb']:>10.0f}")
    hdr = (f"{'strategy':<36}{'r':>5}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'cpu p50':>9}{'cpu p99':>9}{'cand/q':>12}"
           f"{'rows/q':>9}{'probes':>8}{'recall':>8}{'missed':>7}{'extra':>6}")
    print(hdr)
    for x in res["results"]:
        print(f"{x['strategy']:<36}{x['r']!s:>5}{x['n']:>5}{x['p50_ms']:>9.1f}{x['p99_ms']:>9.1f}"
              f"{x.get('cpu_p50_ms', float('nan')):>9.1f}{x.get('cpu_p99_ms', float('nan')):>9.1f}"
              f"{x['cand']:>12.0f}{x['rows']:>9.1f}{x.get('probes_q0', ''):>8}{x['recall']:>8.4f}{x['missed']:>7}"
              f"{x['extra']:>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, default=Path("/work/shared/eval/pool"))
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--home", type=Path, default=Path("/work/benchpg"))
    ap.add_argument("--strategies", default="numpy,seq,hnsw,mih")
    ap.add_argument("--mih", dest="mih_list", default=DEFAULT_MIH, help="comma list of m<m>:<scheme>:<shape>[+skip]")
    ap.add_argument("--radii", default="6,7,8,10,10/6", help='e.g. 6,7,8,10,10/6 ("10/6": the first 8 hashes at 10, '
                    'the others at 6)')
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--hashes-per-query", type=int, default=40)
    ap.add_argument("--random-per-query", type=int, default=10)
    ap.add_argument("--seq-queries", type=int, default=3, help="query images for the (slow) sequential scans")
    ap.add_argument("--hnsw-max", type=int, default=1_000_000, help="build HNSW only up to this size")
    ap.add_argument("--ef", default="40,100,400")
    ap.add_argument("--boxes", type=int, default=40, help="random crops per pool photo")
    ap.add_argument("--clustered-frac", type=float, default=0.10)
    ap.add_argument("--alpha", type=float, default=5.0, help="adapt: cost of one probe in candidates")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per variant and radius")
    ap.add_argument("--hnsw-budget", type=float, default=150.0, help="seconds per HNSW ef_search value")
    ap.add_argument("--seq-budget", type=float, default=60.0, help="seconds per sequential-scan variant")
    ap.add_argument("--min-queries", type=int, default=10, help="MIH: query images measured even past the budget")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default HOME/search_index.json)")
    ap.add_argument("--shared-buffers", default=None, help="restart the private server with this shared_buffers")
    ap.add_argument("--keep", action="store_true", help="keep the table and the server running")
    args = ap.parse_args(argv)
    args.strategies = set(args.strategies.split(","))
    args.mih_list = [s for s in args.mih_list.split(",") if s]
    args.radii = sorted((parse_radius(x) for x in args.radii.split(",")),
                        key=lambda r: (1, 0, r) if isinstance(r, str) else (0, r, ""))
    args.ef = [int(x) for x in args.ef.split(",")]
    out = args.out or args.home / "search_index.json"

    real, photo = real_hashes(args.pool, args.boxes, args.seed, args.home / "real_phash.npz")
    queries = make_queries(real, photo, args.queries, args.hashes_per_query, args.random_per_query, args.seed)
    log(f"{len(real)} real hashes, {len(queries)} query images x {queries.shape[1]} hashes")
    server = EmbeddedServer(args.home)
    if args.shared_buffers:
        # our private server only: restart it with a different shared_buffers (engine default:
        # embedded.default_shared_buffers(); 256MB when docs/bench-index.md was measured)
        os.environ["IMGSEARCH_PG_SHARED_BUFFERS"] = args.shared_buffers
        server.stop()
    url = server.ensure_running()
    all_res = {"args": {k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items()}, "real_hashes": len(real), "sizes": []}
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            res = run_size(args, url, n, real, photo, queries)
            all_res["sizes"].append(res)
            out.write_text(json.dumps(all_res, indent=1))
            print_tables(res)
            sys.stdout.flush()
            if not args.keep:
                with psycopg.connect(url, autocommit=True) as c:
                    c.execute(f"drop table if exists {TABLE}")
    finally:
        if not args.keep:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
