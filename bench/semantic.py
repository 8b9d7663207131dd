"""Similar images, measured: embedding speed, the HNSW index at 100k / 1M vectors, and neighbour quality.

    .venv/bin/python bench/semantic.py speed   [--pool POOL] [--images 200]
    .venv/bin/python bench/semantic.py hnsw    --n 100000 [--home DIR] [--queries 200] [--keep]
    .venv/bin/python bench/semantic.py quality [--pool POOL] [--labels bench/semantic_labels.csv]

speed: embeddings per second of pool photos, the way ingest makes them (decoded, thumbnail, network),
  on 1 and 2 torch threads in one process, and in 2 processes of 1 thread (as ingest's workers), with CPU time.
hnsw: a table shaped like image_embeddings (vector(1280), the migration's HNSW cosine index) filled with
  N unit vectors, half random (Gaussian, normalised) and half "real": the pool's real embeddings (photos,
  icons, distractors), each with noisy copies around it (cos ~0.7 to it: clusters like photos of a kind).
  Loaded by binary COPY, then the index is built (CREATE INDEX, timed: wall and the server's CPU), then
  queries: real-like ones (a pool embedding with fresh noise) and random ones, limit 10, at ef_search 40
  and 100: p50 / p95 latency and recall@10 against the exact answer (numpy, in chunks). Then 1,000 more
  rows inserted into the built index (the per-image cost at ingest).
quality: the labelled pool photos (bench/semantic_labels.csv: file, kind) embedded; for each, its 5
  nearest other labelled photos by cosine similarity and by pHash Hamming distance; mean precision@5
  (the share of the 5 that are of its kind), per kind and overall.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import embedding  # noqa: E402
from engine.fingerprint import WORKING_SIDE  # noqa: E402
from engine.loading import load_image, thumbnail_jpeg  # noqa: E402

POOL = Path("/work/shared/eval/pool")
DIM = embedding.DIM
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def pool_files(pool: Path, parts=("photos", "icons", "distractors")) -> list[Path]:
    return sorted(p for part in parts for p in (pool / part).rglob("*") if p.suffix.lower() in SUFFIXES)


def thumbnail_of(path: Path) -> bytes:
    return thumbnail_jpeg(load_image(path, target_size=WORKING_SIDE).image)


# --- speed --------------------------------------------------------------------------------------------
def _embed_files(paths: list[str]) -> int:
    embedding.set_threads(1)
    for p in paths:
        embedding.embed_thumbnail(thumbnail_of(Path(p)))
    return len(paths)


def speed(args) -> None:
    import multiprocessing

    import torch

    files = pool_files(args.pool, ("photos",))[: args.images]
    thumbs = [thumbnail_of(p) for p in files]
    embedding.embed_thumbnail(thumbs[0])  # load the network
    print(f"{len(files)} pool photos; load average before: {loadavg()}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        c0, t0 = cpu_s(), time.perf_counter()
        for th in thumbs:
            embedding.embed_thumbnail(th)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        print(f"network only (thumbnail in), 1 process x {threads} thread(s): {len(thumbs) / wall:.1f} embeddings/s, "
              f"{wall / len(thumbs) * 1000:.1f} ms wall and {cpu / len(thumbs) * 1000:.1f} ms CPU per image",
              flush=True)
        if threads > 1:
            continue
        c0, t0 = cpu_s(), time.perf_counter()
        for p in files:
            embedding.embed_thumbnail(thumbnail_of(p))
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        print(f"file in (decode + thumbnail + network), 1 process x {threads} thread(s): {len(files) / wall:.1f} "
              f"embeddings/s, {wall / len(files) * 1000:.1f} ms wall, {cpu / len(files) * 1000:.1f} ms CPU per image",
              flush=True)
    halves = [[str(p) for p in files[i::2]] for i in range(2)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as workers:
        workers.map(_embed_files, [[h[0]] for h in halves])  # start-up and model load, not timed
        t0 = time.perf_counter()
        done = sum(workers.map(_embed_files, halves))
        wall = time.perf_counter() - t0
    print(f"file in, 2 processes x 1 thread (as ingest's workers): {done / wall:.1f} embeddings/s "
          f"({wall / done * 1000:.1f} ms wall per image); load average after: {loadavg()}", flush=True)


# --- hnsw ---------------------------------------------------------------------------------------------
def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


NOISE = 1.0  # noise of a copy, relative to its unit-length source: cos(copy, source) ~ 1/sqrt(1 + 1) ~ 0.71


def real_vectors(pool: Path, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    files = pool_files(pool)
    vectors = embedding.embed_thumbnails([thumbnail_of(p) for p in files])
    np.save(cache, vectors)
    return vectors


def chunk_vectors(real: np.ndarray, start: int, count: int, n: int, seed: int) -> np.ndarray:
    """Rows start..start+count of the set: even ids random, odd ids a noisy copy of a real embedding."""
    rng = np.random.default_rng([seed, start])
    ids = np.arange(start, start + count)
    out = rng.standard_normal((count, DIM), dtype=np.float32)
    odd = ids % 2 == 1
    sources = real[(ids[odd] // 2) % len(real)]
    out[odd] = sources + out[odd] * (NOISE / np.sqrt(DIM))
    return unit(out)


def copy_data(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """COPY ... (format binary) of (id bigint, embedding vector): pgvector's binary form is dim, 0, floats."""
    row = np.dtype([("fields", ">i2"), ("ilen", ">i4"), ("id", ">i8"), ("vlen", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("v", ">f4", (DIM,))])
    out = np.zeros(len(ids), dtype=row)
    out["fields"], out["ilen"], out["vlen"], out["dim"] = 2, 8, 4 + 4 * DIM, DIM
    out["id"], out["v"] = ids, vectors
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + out.tobytes() + struct.pack(">h", -1)


def vec_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


def _proc_cpu(pid: int, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])  # utime+stime, cutime+cstime
    return (reaped if children else own) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(conn, pgdata: Path) -> float:
    """CPU seconds of this connection's backend plus those of the exited children of the postmaster
    (the parallel build workers, once they are done), so far (Linux /proc)."""
    pid = conn.execute("select pg_backend_pid() as pid").fetchone()["pid"]
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    return _proc_cpu(pid, False) + _proc_cpu(postmaster, True)


def hnsw(args) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    from engine.embedded import EmbeddedServer

    server = EmbeddedServer(Path(args.home))
    server.ensure_running()
    name = f"bench_hnsw_{args.n}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    real = real_vectors(args.pool, Path(args.home) / "pool_embeddings.npy")
    rng = np.random.default_rng(7)
    n_q = args.queries
    picks = rng.integers(0, len(real), n_q)
    noise = rng.standard_normal((n_q, DIM), dtype=np.float32) * (NOISE / np.sqrt(DIM))
    queries = {"real-like": unit(real[picks] + noise),
               "random": unit(rng.standard_normal((n_q, DIM), dtype=np.float32))}
    print(f"n={args.n:,}: {len(real)} real pool embeddings; load average {loadavg()}", flush=True)
    truth = {k: (np.full((n_q, 10), -np.inf, np.float32), np.zeros((n_q, 10), np.int64)) for k in queries}
    with psycopg.connect(server.url(name), autocommit=True, row_factory=dict_row) as conn:
        conn.execute("create extension if not exists vector")
        conn.execute("create table bench_embeddings (image_id bigint primary key, embedding vector(1280) not null)")
        t0 = time.perf_counter()
        chunk = 20_000
        for start in range(0, args.n, chunk):
            count = min(chunk, args.n - start)
            vectors = chunk_vectors(real, start, count, args.n, seed=1)
            ids = np.arange(start, start + count)
            with conn.cursor() as cur, cur.copy("copy bench_embeddings (image_id, embedding) from stdin "
                                                "with (format binary)") as copy:
                copy.write(copy_data(ids, vectors))
            for kind, q in queries.items():  # the exact top 10, merged chunk by chunk
                sims = q @ vectors.T
                best, best_ids = truth[kind]
                both = np.concatenate([best, sims], axis=1)
                both_ids = np.concatenate([best_ids, np.broadcast_to(ids, sims.shape)], axis=1)
                top = np.argsort(-both, axis=1)[:, :10]
                truth[kind] = (np.take_along_axis(both, top, 1), np.take_along_axis(both_ids, top, 1))
        load_s = time.perf_counter() - t0
        conn.execute("vacuum analyze bench_embeddings")
        size = conn.execute("select pg_size_pretty(pg_total_relation_size('bench_embeddings')) as s").fetchone()["s"]
        print(f"loaded {args.n:,} vectors in {load_s:.0f} s (binary COPY); table {size}", flush=True)
        conn.execute(sql.SQL("set maintenance_work_mem = {}").format(sql.Literal(args.maintenance_work_mem)))
        conn.execute("set max_parallel_maintenance_workers = 1")
        c0, t0 = server_cpu_s(conn, server.pgdata), time.perf_counter()
        la0 = loadavg()
        # the index of sql/migrations/0006_embeddings.sql (pgvector's defaults m = 16, ef_construction = 64)
        conn.execute("create index bench_embeddings_hnsw on bench_embeddings using hnsw (embedding vector_cosine_ops)")
        build_s = time.perf_counter() - t0
        index_size = conn.execute("select pg_size_pretty(pg_relation_size('bench_embeddings_hnsw')) as s").fetchone()
        print(f"HNSW build: {build_s:.0f} s wall, {server_cpu_s(conn, server.pgdata) - c0:.0f} s server CPU (the "
              f"backend and its parallel worker), "
              f"index {index_size['s']}, maintenance_work_mem {args.maintenance_work_mem}; load average "
              f"before {la0}, after {loadavg()}", flush=True)
        for ef in (40, 100):
            conn.execute(sql.SQL("set hnsw.ef_search = {}").format(sql.Literal(ef)))
            for kind, q in queries.items():
                times, hits = [], 0
                for i, v in enumerate(q):
                    text = vec_text(v)
                    t0 = time.perf_counter()
                    rows = conn.execute("select image_id from bench_embeddings order by embedding <=> %s::vector "
                                        "limit 10", [text]).fetchall()
                    times.append(time.perf_counter() - t0)
                    hits += len({r["image_id"] for r in rows} & set(truth[kind][1][i].tolist()))
                ms = np.array(times) * 1000
                print(f"ef_search {ef}, {kind} queries: p50 {np.percentile(ms, 50):.1f} ms, p95 "
                      f"{np.percentile(ms, 95):.1f} ms, recall@10 {hits / (10 * len(q)):.3f} ({len(q)} queries)",
                      flush=True)
        extra = chunk_vectors(real, args.n, 1000, args.n, seed=2)
        t0 = time.perf_counter()
        for i, v in enumerate(extra):
            conn.execute("insert into bench_embeddings values (%s, %s::vector)", [args.n + i, vec_text(v)])
        print(f"insert into the built index: {(time.perf_counter() - t0) / len(extra) * 1000:.1f} ms per row "
              f"(1,000 rows, one statement each)", flush=True)
    if not args.keep:
        with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


# --- quality ------------------------------------------------------------------------------------------
def quality(args) -> None:
    from engine.fingerprint import fingerprint

    with open(args.labels) as f:
        labelled = [(row["file"], row["kind"]) for row in csv.DictReader(f)]
    files = [args.pool / rel for rel, _ in labelled]
    kinds = np.array([k for _, k in labelled])
    images = [embedding.thumbnail_image(thumbnail_of(p)) for p in files]
    raw = embedding.features(images)
    vectors = embedding.normalise(raw)
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)  # the same features, not centred
    phashes = np.array([fingerprint(p, with_keypoints=False).phash.value for p in files], dtype=np.uint64)
    cos, cos_raw = vectors @ vectors.T, raw @ raw.T
    np.fill_diagonal(cos, -np.inf)
    np.fill_diagonal(cos_raw, -np.inf)
    ham = np.array([[bin(int(a) ^ int(b)).count("1") for b in phashes] for a in phashes], dtype=np.float64)
    ham += rng_tiebreak(len(files))
    np.fill_diagonal(ham, np.inf)
    by_cos = np.argsort(-cos, axis=1)[:, :5]
    by_ham = np.argsort(ham, axis=1)[:, :5]
    by_raw = np.argsort(-cos_raw, axis=1)[:, :5]
    p_raw = (kinds[by_raw] == kinds[:, None]).mean(axis=1)
    p_cos = (kinds[by_cos] == kinds[:, None]).mean(axis=1)
    p_ham = (kinds[by_ham] == kinds[:, None]).mean(axis=1)
    chance = np.array([(kinds == k).sum() - 1 for k in kinds]) / (len(kinds) - 1)
    print(f"{len(files)} labelled photos; mean precision@5 of same-kind neighbours")
    print("| kind | photos | embedding (cosine) | features not centred | pHash (Hamming) | chance |")
    print("|---|---|---|---|---|---|")
    for k in sorted(set(kinds)):
        m = kinds == k
        print(f"| {k} | {m.sum()} | {p_cos[m].mean():.2f} | {p_raw[m].mean():.2f} | {p_ham[m].mean():.2f} | "
              f"{chance[m].mean():.2f} |")
    print(f"| **all** | {len(kinds)} | **{p_cos.mean():.2f}** | {p_raw.mean():.2f} | **{p_ham.mean():.2f}** | "
          f"{chance.mean():.2f} |")
    related = cos[kinds[:, None] == kinds[None, :]]
    unrelated = cos[(kinds[:, None] != kinds[None, :])]
    print(f"cosine similarity: same kind mean {related[np.isfinite(related)].mean():.3f}, "
          f"different kinds mean {unrelated.mean():.3f} (sd {unrelated.std():.3f})")
    unrelated_raw = cos_raw[(kinds[:, None] != kinds[None, :])]
    print(f"not centred: different kinds mean {unrelated_raw.mean():.3f} (sd {unrelated_raw.std():.3f})")


def rng_tiebreak(n: int) -> np.ndarray:
    """pHash distances are whole numbers: ties are broken at random (fixed seed), not by file order."""
    return np.random.default_rng(3).random((n, n)) * 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--images", type=int, default=200)
    p = sub.add_parser("hnsw")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--home", default="/tmp/imgsearch-bench-semantic")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--maintenance-work-mem", default="2GB")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p = sub.add_parser("quality")
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--labels", type=Path, default=ROOT / "bench" / "semantic_labels.csv")
    args = ap.parse_args()
    {"speed": speed, "hnsw": hnsw, "quality": quality}[args.what](args)


if __name__ == "__main__":
    main()
