#!/usr/bin/env python3
"""Ingest speed, end to end into PostgreSQL, and whether it holds as the tables grow.

    python bench/ingest.py /work/shared/eval/pool/photos --home /tmp/ingestbench \\
        [--workers 1,2] [--synthetic 1000000] [--synthetic-postings 100000] [--store-rounds 8]

Runs its own embedded PostgreSQL in --home (created if missing). On the same files it measures:

  bare        decode + pHash loop in this process (engine.loading.load_image + engine.hashes.phash)
  fingerprint the full fingerprint + row packing in N worker processes, no database (engine.ingest.outcomes)
  end to end  engine.ingest.ingest into an empty database with N workers (what `imgsearch ingest` does),
              then the same inputs again (every URI recorded: the resume fast path), then copies of
              the files at new paths (bytes recognised by SHA-256)
  store       store_batch alone, batches of 64 precomputed images (each stored under a fresh SHA-256),
              into the empty database

then bulk-loads --synthetic images (random hashes, 1 URI and 3 region rows each; postings of
500 keypoints for the first --synthetic-postings of them) and measures store and end to end
again on the grown tables, and times the resume fast path's look-up over all the synthetic
URIs (--resume-check-only: that alone, on the database an earlier run left in --home).
Prints a table (Markdown) and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import db  # noqa: E402
from engine.embedded import EmbeddedServer  # noqa: E402
from engine.ingest import ingest, outcomes, plan  # noqa: E402
from engine.sources import Item, from_arguments  # noqa: E402
from engine.store import Entry, store_batch  # noqa: E402

SYNTHETIC_IMAGES = """
insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality, metadata)
select sha256(int8send(g) || '\\x5359'::bytea), 1024, 768, 'JPEG', 150000,
       pg_temp.r(), pg_temp.r(), pg_temp.r(), pg_temp.r() || pg_temp.r() || pg_temp.r() || pg_temp.r(), 90, '{}'::jsonb
from generate_series(%(start)s::bigint, %(stop)s::bigint) g
"""
RANDOM_BITS = """
create or replace function pg_temp.r() returns bit(64) language sql volatile as
$$ select (((random() * 4294967296)::bigint << 32) | (random() * 4294967296)::bigint)::bit(64) $$
"""
SYNTHETIC_REGIONS = """
insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash)
select i.id, n, case n when 0 then 'global' when 1 then 'face' else 'picture' end,
       0, 0, 1, 1, case n when 0 then i.phash else pg_temp.r() end
from images i cross join generate_series(0, 2) n
where i.id > %(after)s
"""
SYNTHETIC_URIS = """
insert into image_uris (image_id, uri) select id, 'synthetic://' || id from images where id > %(after)s
"""
SYNTHETIC_POSTINGS = """
insert into keypoint_words (word, image_id, angle, level)
select (random() * 6400000)::int, i.id, (random() * 255)::int2, (random() * 40)::int2
from (select id from images where id > %(after)s order by id limit %(n)s) i cross join generate_series(1, 500)
"""
POSTING_INDEXES = ["drop index if exists keypoint_words_word", "drop index if exists keypoint_words_image"]
POSTING_INDEXES_BACK = [
    "create index keypoint_words_word on keypoint_words (word) include (image_id, angle, level)",
    "create index keypoint_words_image on keypoint_words (image_id)",
]


def fresh(server: EmbeddedServer, name: str) -> str:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = server.url(name)
    with db.raw_connect(url) as conn:
        db.migrate(conn)
    return url


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def bare(files: list[Path]) -> float:
    from engine.hashes import phash
    from engine.loading import load_image

    t = time.perf_counter()
    for f in files:
        phash(load_image(f, target_size=1024).image)
    return len(files) / (time.perf_counter() - t)


def end_to_end(url: str, items: list[Item], workers: int) -> tuple[float, float, float, float]:
    """(images/s of a first run, the same once the first batch is written (worker start-up
    excluded), inputs/s of a second run that finds every URI recorded, inputs/s of a run over
    copies of the files at new paths (bytes recognised by SHA-256, not fingerprinted))."""
    with db.raw_connect(url) as conn, tempfile.TemporaryDirectory() as copies:
        first, steady = timed_ingest(conn, items, workers)
        again = ingest(conn, items, workers=workers)
        moved = [Item(str(shutil.copy(i.uri, Path(copies) / f"{n}{Path(i.uri).suffix}"))) for n, i in enumerate(items)]
        elsewhere = ingest(conn, moved, workers=workers)
    assert first.failed == 0 and again.skipped == len(items), (first, again)
    assert elsewhere.by_sha256 == len(items), elsewhere
    return first.added / first.seconds, steady, len(items) / again.seconds, len(items) / elsewhere.seconds


def timed_ingest(conn, items: list[Item], workers: int):
    """(the ingest's summary, images/s between the first and the last batch written: without the
    workers' start-up and the closing ANALYZE, which a 301-image run is short enough to feel)."""
    marks: list[tuple[float, int]] = []
    summary = ingest(conn, items, workers=workers, progress=lambda n: marks.append((time.perf_counter(), n)))
    done = [(t, n) for t, n in marks if n]
    steady = sum(n for _, n in done[1:]) / (done[-1][0] - done[0][0]) if len(done) > 1 else float("nan")
    return summary, steady


def store_rate(url: str, entries: list[Entry], rounds: int, tag: str, batch: int = 64) -> float:
    """images/s of store_batch alone; each round stores every entry once more under a new SHA-256."""
    with db.raw_connect(url) as conn:
        t = time.perf_counter()
        n = 0
        for r in range(rounds):
            fresh_entries = [replace(e, prepared=replace(e.prepared, sha256=hashlib.sha256(
                f"{tag}:{r}:{i}".encode()).digest()), uri=f"bench://{tag}/{r}/{i}") for i, e in enumerate(entries)]
            for at in range(0, len(fresh_entries), batch):
                store_batch(conn, fresh_entries[at:at + batch])
                n += len(fresh_entries[at:at + batch])
        return n / (time.perf_counter() - t)


def grow(url: str, images: int, postings_images: int, chunk: int = 250_000) -> dict:
    t = time.perf_counter()
    with db.raw_connect(url, autocommit=True) as conn:
        conn.execute(RANDOM_BITS)
        after = conn.execute("select coalesce(max(id), 0) as m from images").fetchone()["m"]
        base = conn.execute("select count(*) as n from images").fetchone()["n"]
        for start in range(0, images, chunk):
            conn.execute(SYNTHETIC_IMAGES, {"start": base + start, "stop": base + min(images, start + chunk) - 1})
        conn.execute(SYNTHETIC_REGIONS, {"after": after})
        conn.execute(SYNTHETIC_URIS, {"after": after})
        for statement in POSTING_INDEXES:
            conn.execute(statement)
        # the word counts' triggers (migration 0008) off for the bulk insert, then counted once
        conn.execute("alter table keypoint_words disable trigger keypoint_words_count_new")
        conn.execute(SYNTHETIC_POSTINGS, {"after": after, "n": postings_images})
        conn.execute("alter table keypoint_words enable trigger keypoint_words_count_new")
        conn.execute("select refresh_word_frequencies()")
        for statement in POSTING_INDEXES_BACK:
            conn.execute(statement)
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")
        counts = conn.execute("select (select count(*) from images) as images, (select count(*) from regions) as "
                              "regions, (select count(*) from image_uris) as uris, (select count(*) from "
                              "keypoint_words) as postings, pg_database_size(current_database()) as bytes").fetchone()
    return {**counts, "seconds": time.perf_counter() - t}


def resume_check(url: str) -> tuple[int, float]:
    """(inputs, inputs/s) of the resume fast path's look-up alone over every synthetic URI."""
    with db.raw_connect(url) as conn:
        ids = [r["id"] for r in conn.execute("select image_id as id from image_uris where uri like 'synthetic://%'")]
        items = [Item(f"synthetic://{i}") for i in ids]
        t = time.perf_counter()
        todo = plan(conn, items)
        seconds = time.perf_counter() - t
    assert not todo.to_read, "some synthetic URIs were not found"
    return len(items), len(items) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--home", type=Path, default=Path("/tmp/ingestbench"))
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    ap.add_argument("--synthetic-postings", type=int, default=100_000)
    ap.add_argument("--store-rounds", type=int, default=8)
    ap.add_argument("--resume-check-only", action="store_true",
                    help="only time the recorded-URI look-up over the synthetic URIs of an earlier run's database")
    ap.add_argument("--dupes-only", metavar="LEVELS",
                    help="only time `imgsearch dupes` at these levels (e.g. strict,normal) on that database")
    ap.add_argument("--grown-only", type=int, metavar="ROUNDS",
                    help="only time the end-to-end ingest ROUNDS times per --workers on that database as it is")
    args = ap.parse_args()
    server = EmbeddedServer(args.home.resolve())
    server.ensure_running()
    if args.resume_check_only:
        n, rate = resume_check(server.url("bench_ingest"))
        print(f"recorded-URI look-up (resume fast path) over {n:,} recorded URIs: {rate:,.0f} inputs/s ({load()})")
        return
    if args.dupes_only:
        from engine.dupes import LEVELS, find_groups

        with db.raw_connect(server.url("bench_ingest")) as conn:
            n = conn.execute("select count(*) as n from images").fetchone()["n"]
            for level in args.dupes_only.split(","):
                t = time.perf_counter()
                groups = find_groups(conn, level)
                print(f"dupes --level {level} ({LEVELS[level]}) over {n:,} images: {len(groups)} groups in "
                      f"{time.perf_counter() - t:.1f} s ({load()})", flush=True)
        return
    items = list(from_arguments([str(args.photos)]))
    files = [Path(i.uri) for i in items]
    workers = [int(w) for w in args.workers.split(",")]
    if args.grown_only:
        uris = [i.uri for i in items]
        with db.raw_connect(server.url("bench_ingest")) as conn:

            def forget() -> None:  # these photos, if an earlier run left them stored
                conn.execute("delete from images where id in "
                             "(select image_id from image_uris where uri = any(%(u)s))", {"u": uris})
                conn.commit()

            forget()
            n = conn.execute("select count(*) as n from images").fetchone()["n"]
            for w in workers:
                for _ in range(args.grown_only):
                    first, steady = timed_ingest(conn, items, w)
                    forget()
                    print(f"end to end, {w} worker(s), {n:,} images: {first.added / first.seconds:.1f} images/s, "
                          f"{steady:.1f} after the first batch ({load()})", flush=True)
        return
    rows: list[tuple[str, str, str]] = []

    def row(what: str, rate: float, unit: str = "images/s") -> None:
        rows.append((what, f"{rate:.1f} {unit}", load()))
        print(f"  {what:<60} {rate:8.1f} {unit}  ({load()})", flush=True)

    print(f"{len(files)} files from {args.photos}; {os.cpu_count()} cores")
    row("bare decode + pHash loop, 1 process", bare(files))
    entries: list[Entry] = []
    for w in workers:
        t = time.perf_counter()
        done = list(outcomes(items, w))
        row(f"fingerprint + packing only, {w} worker(s), no database", len(done) / (time.perf_counter() - t))
        entries = [Entry(o.prepared, o.item.uri) for o in done if o.prepared is not None]
    url = ""
    for w in workers:
        url = fresh(server, "bench_ingest")
        rate, steady, skip, moved = end_to_end(url, items, w)
        row(f"end to end into an empty database, {w} worker(s)", rate)
        row(f"  the same after the first batch (without worker start-up), {w} worker(s)", steady)
        row(f"re-run, every URI recorded (resume fast path), {w} worker(s)", skip, "inputs/s")
        row(f"the same files copied elsewhere (bytes recognised by SHA-256), {w} worker(s)", moved, "inputs/s")
    row("store only (store_batch, batches of 64), empty database",
        store_rate(url, entries, args.store_rounds, "empty"))
    if args.synthetic:
        grown = grow(url, args.synthetic, args.synthetic_postings)
        print(f"  grew the database in {grown['seconds']:.0f} s: {grown['images']:,} images, {grown['regions']:,} "
              f"regions, {grown['uris']:,} URIs, {grown['postings']:,} postings, {grown['bytes'] / 2**30:.1f} GiB")
        big = f"{grown['images'] // 1000:,}k images"
        n, rate = resume_check(url)
        row(f"recorded-URI look-up alone over {n:,} recorded URIs", rate, "inputs/s")
        row(f"store only (store_batch, batches of 64), {big}", store_rate(url, entries, args.store_rounds, "big"))
        with db.raw_connect(url) as conn:
            conn.execute("delete from images where sha256 = any(%(s)s)", {"s": [e.prepared.sha256 for e in entries]})
            conn.commit()
        for w in workers:
            with db.raw_connect(url) as conn:
                first, steady = timed_ingest(conn, items, w)
                again = ingest(conn, items, workers=w)
                conn.execute("delete from images where sha256 = any(%(s)s)",
                             {"s": [e.prepared.sha256 for e in entries]})
                conn.commit()
            row(f"end to end, {w} worker(s), {big}", first.added / first.seconds)
            row(f"  the same after the first batch (without worker start-up), {w} worker(s), {big}", steady)
            row(f"re-run, every URI recorded, {w} worker(s), {big}", len(items) / again.seconds, "inputs/s")
    print("\n| measurement | rate | machine load (1/5 min) |\n|---|---|---|")
    for what, rate, ld in rows:
        print(f"| {what} | {rate} | {ld.removeprefix('load ')} |")


if __name__ == "__main__":
    main()
