#!/usr/bin/env python3
"""Measure provenance: is each derived image's parent, and the original at the top of its chain, found?

    python bench/provenance.py POOL_DIR [--originals 40] [--composites 12] [--negatives 20] [--seed 7]
                                        [--order-seed 1] [--workers 2] [--keep DIR] [--no-quality]

Builds the set of bench/provenance_set.py (originals, crops, crops of crops, edited copies,
composites of 2-4 originals, unrelated photos) in a temporary folder, ingests it in shuffled order
into a fresh database (a temporary embedded PostgreSQL, or DATABASE_URL when set: it must be an
empty database), links every image (engine.provenance.link_pending) and compares each image's
lineage with the truth:

- parent: the images a derived image's lineage shows it was made from (its direct ancestors);
  precision = right parents / parents shown, recall = derived images whose true parent is shown
  (for composites: true sources shown / true sources);
- root: the images at the top of its ancestry (itself when it has none).

Originals and unrelated photos must show no parent. ``--no-quality`` hides the JPEG qualities
(as for images ingested from URLs or bytes, whose files are not at hand): same-size copies are
then ordered by bytes per pixel, then ingest time. ``--derived-quality 88`` saves the derived
images at the originals' quality: only ingest time can then order same-size copies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import provenance_set  # noqa: E402

from engine.queries import query  # noqa: E402

SINGLE = ("crop", "crop_of_crop", "resize", "jpeg", "colour", "gray", "mirror")
COMPOSITE = ("composite2", "composite3", "composite4")
NONE = ("original", "negative")


def backend_cpu(conn) -> float:
    """CPU seconds the PostgreSQL backend serving this connection has used (Linux /proc)."""
    pid = conn.execute(query("backend_pid")).fetchone()["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def roots_of(tree: list[dict]) -> set[int]:
    out = set()
    for node in tree:
        out |= roots_of(node["ancestors"]) if node["ancestors"] else {node["id"]}
    return out


def evaluate(conn, truth: dict, ids: dict[str, int]) -> dict:
    from engine.provenance import lineage

    names = {v: k for k, v in ids.items()}
    rows = {}
    for name, t in truth.items():
        lin = lineage(conn, ids[name])
        parents = {names[a["id"]] for a in lin["ancestors"]}
        roots = {names[r] for r in roots_of(lin["ancestors"])} or {name}
        rows[name] = {"kind": t["kind"], "parents": parents, "roots": roots, "true_parents": set(t["parents"]),
                      "true_roots": set(t["roots"]), "children": len(lin["descendants"])}
    return rows


def score(rows: dict, kinds) -> dict:
    picked = [r for r in rows.values() if r["kind"] in kinds]
    out = {"n": len(picked)}
    for what in ("parents", "roots"):
        shown = sum(len(r[what]) for r in picked)
        right = sum(len(r[what] & r["true_" + what]) for r in picked)
        true = sum(len(r["true_" + what]) for r in picked)
        out[what] = {"precision": right / shown if shown else 1.0, "recall": right / true if true else 1.0,
                     "shown": shown, "right": right, "true": true}
    return out


def table(rows: dict) -> str:
    lines = ["| images | n | parent precision | parent recall | root precision | root recall |",
             "|---|---|---|---|---|---|"]

    def line(label, kinds):
        s = score(rows, kinds)
        p, r = s["parents"], s["roots"]
        lines.append(f"| {label} | {s['n']} | {p['precision']:.3f} ({p['right']}/{p['shown']}) | "
                     f"{p['recall']:.3f} ({p['right']}/{p['true']}) | {r['precision']:.3f} | {r['recall']:.3f} |")

    for kind in SINGLE:
        line(kind, (kind,))
    line("**single-source, all**", SINGLE)
    for kind in COMPOSITE:
        line(kind, (kind,))
    line("**composites, all (every source)**", COMPOSITE)
    wrong = [n for n, r in rows.items() if r["kind"] in NONE and r["parents"]]
    lines.append(f"\noriginals and unrelated photos shown with a parent: {len(wrong)} of "
                 f"{sum(1 for r in rows.values() if r['kind'] in NONE)} {sorted(wrong)}")
    return "\n".join(lines)


def mistakes(rows: dict) -> str:
    out = []
    for name, r in sorted(rows.items()):
        if r["parents"] != r["true_parents"]:
            out.append(f"  {name} ({r['kind']}): shown {sorted(r['parents'])}, true {sorted(r['true_parents'])}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", type=Path)
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--composites", type=int, default=12)
    ap.add_argument("--negatives", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7, help="which photos, crops and edits")
    ap.add_argument("--order-seed", type=int, default=1, help="the shuffled ingest order")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="build the set here and keep it (default: a temporary folder)")
    ap.add_argument("--derived-quality", type=int, default=provenance_set.DERIVED_QUALITY,
                    help="JPEG quality of the derived images (the pool's photos are 88)")
    ap.add_argument("--no-quality", action="store_true",
                    help="JPEG qualities unknown: same-size copies ordered by bytes per pixel, then ingest time")
    ap.add_argument("--verbose", action="store_true", help="list every image whose parents are wrong")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="provbench-"))
    folder = args.keep or work / "set"
    truth = provenance_set.build(args.pool, folder, args.originals, args.composites, args.negatives, args.seed,
                                 args.derived_quality)
    kinds = defaultdict(int)
    for t in truth.values():
        kinds[t["kind"]] += 1
    print(f"set: {len(truth)} images {dict(kinds)}", flush=True)

    server = None
    if not os.environ.get("DATABASE_URL"):
        from engine.embedded import EmbeddedServer

        os.environ["IMGSEARCH_HOME"] = str(work / "home")
        server = EmbeddedServer(work / "home")
        os.environ["DATABASE_URL"] = server.ensure_running()
    try:  # from here on the server is stopped whatever happens (an import that fails included)
        from engine import db, provenance
        from engine.ingest import ingest
        from engine.sources import Item

        if args.no_quality:
            provenance.encoding_quality = lambda *a, **k: None
        files = sorted(folder / name for name in truth)
        random.Random(args.order_seed).shuffle(files)
        with db.connect() as conn:
            t = time.perf_counter()
            ingested = ingest(conn, [Item(str(f.resolve())) for f in files], workers=args.workers)
            ingest_s = time.perf_counter() - t
            print(f"ingest: {ingested.added} images in {ingest_s:.1f} s ({ingested.added / ingest_s:.1f}/s, "
                  f"{args.workers} workers)", flush=True)
            cpu, pg_cpu = time.process_time(), backend_cpu(conn)
            linked = provenance.link_pending(conn)
            cpu, pg_cpu = time.process_time() - cpu, backend_cpu(conn) - pg_cpu
            n = max(linked.linked, 1)
            print(f"link: {linked.linked} images in {linked.seconds:.1f} s ({1000 * linked.seconds / n:.0f} ms an "
                  f"image, one process; CPU {1000 * cpu / n:.0f} ms Python + {1000 * pg_cpu / n:.0f} ms PostgreSQL), "
                  f"{linked.edges} edges", flush=True)
            ids = {Path(r["uri"]).name: r["image_id"] for r in conn.execute(
                query("image_ids_by_uri"), {"uris": [str(f.resolve()) for f in files]}).fetchall()}
            t = time.perf_counter()
            rows = evaluate(conn, truth, ids)
            print(f"lineage: {len(rows)} answers in {time.perf_counter() - t:.2f} s")
    finally:
        if server is not None:
            server.stop()
    print(table(rows))
    if args.verbose:
        print("wrong parents:\n" + mistakes(rows))
    print(json.dumps({k: score(rows, v) for k, v in (("single", SINGLE), ("composite", COMPOSITE))}))


if __name__ == "__main__":
    main()
