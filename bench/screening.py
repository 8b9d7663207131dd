#!/usr/bin/env python3
"""Screened verification (engine/verify.screened) against full verification, on a kit corpus.

    IMGSEARCH_HOME=/tmp/screen imgsearch ingest CORPUS/index        # once: the corpus, stored
    IMGSEARCH_HOME=/tmp/screen python bench/screening.py CORPUS [--pairs 120] [--skip 2,3]

1. Pairs: the candidate verifications of --pairs queries (a seeded sample of CORPUS/queries),
   replayed in this process on one core: for each first-pass sample (all but every SKIP-th query
   keypoint), how many pairs that the full pass rejects, accepts, or fits near the bar (the
   5-11 distinct inliers that guided verification may still accept) the sample keeps, and the
   time of the first pass and of the full one.
2. Queries: every query of the corpus searched twice on the stored corpus, with screening off and
   with the engine's screening (search.SCREEN_FROM_RANK; --from-rank to try another), listing
   the queries whose true sources found differ. The engine's default must list none.

Prints a report; the figures are in docs/benchmarks.md ("Screened verification").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("IMGSEARCH_SEARCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import db  # noqa: E402
from engine import keypoints as kpmod  # noqa: E402
from engine import search as searchmod  # noqa: E402
from engine import verify as verifymod  # noqa: E402
from engine.fingerprint import query_fingerprint  # noqa: E402


def candidate_pairs(conn, corpus: Path, queries: list[dict]) -> list[tuple]:
    """(query keypoints, stored keypoints) of every feature check the engine's search makes."""
    pairs = []
    real = searchmod.feature_checks

    def recording(q, cand, details, both_sides=False, screen=False):
        if details.get("keypoints") and q.fp.keypoints is not None:
            stored = kpmod.from_bytes(details["keypoints"])
            pairs.extend((kp, stored) for kp in searchmod._sides_to_verify(q, cand, both_sides))
        return real(q, cand, details, both_sides, screen)

    searchmod.feature_checks = recording
    try:
        for q in queries:
            searchmod.search(conn, query_fingerprint(corpus / "queries" / q["query"]))
    finally:
        searchmod.feature_checks = real
    return pairs


def outcome(v) -> str:
    return "none" if v is None else ("accepted" if v.accepted else "near")


def replay(pairs: list[tuple], skip: int) -> dict:
    kept, total = Counter(), Counter()
    first_s = full_s = 0.0
    for query, stored in pairs:
        t = time.perf_counter()
        full = verifymod.verify(query, stored, min_inliers=searchmod.GUIDE_MIN_DISTINCT)
        t1 = time.perf_counter()
        sample = verifymod.verify(verifymod.screening_sample(query, skip), stored, min_inliers=1)
        t2 = time.perf_counter()
        full_s, first_s = full_s + t1 - t, first_s + t2 - t1
        total[outcome(full)] += 1
        kept[outcome(full)] += sample is not None
    return {"skip": skip, "pairs": len(pairs),
            "kept": {k: f"{kept[k]}/{total[k]}" for k in ("none", "accepted", "near")},
            "first_pass_ms": round(first_s / len(pairs) * 1000, 2), "full_ms": round(full_s / len(pairs) * 1000, 2)}


def sources_found(conn, corpus: Path, queries: list[dict], uri_of: dict, from_rank: int) -> dict:
    searchmod.SCREEN_FROM_RANK = from_rank
    found = {}
    for q in queries:
        want = {uri_of.get(str((corpus / "index" / s["file"]).resolve())) for s in q["sources"]}
        matches = searchmod.search(conn, query_fingerprint(corpus / "queries" / q["query"]))
        found[q["query"]] = (bool(matches) and matches[0].id in want, sorted(want & {m.id for m in matches}))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--pairs", type=int, default=120, help="queries whose candidate pairs are replayed")
    ap.add_argument("--skip", default="2,3", help="first-pass samples to replay: all but every SKIP-th keypoint")
    ap.add_argument("--from-rank", type=int, default=searchmod.SCREEN_FROM_RANK,
                    help="candidates screened from this rank on, in the query-by-query comparison")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)

    truth = json.loads((args.corpus / "truth.json").read_text())["queries"]
    conn = db.connect()
    uri_of = {r["uri"]: r["image_id"] for r in conn.execute("select image_id, uri from image_uris").fetchall()}
    if not uri_of:
        sys.exit("no stored images: ingest CORPUS/index into this IMGSEARCH_HOME / DATABASE_URL first")

    sample = random.Random(args.seed).sample(truth, min(args.pairs, len(truth)))
    pairs = candidate_pairs(conn, args.corpus, sample)
    for skip in (int(s) for s in args.skip.split(",")):
        print(json.dumps(replay(pairs, skip)))

    off = sources_found(conn, args.corpus, truth, uri_of, 10**6)
    on = sources_found(conn, args.corpus, truth, uri_of, args.from_rank)
    differ = [name for name in off if off[name] != on[name]]
    for name in differ:
        print(f"{name}: without screening {off[name]}, with {on[name]}")
    print(json.dumps({"queries": len(off), "from_rank": args.from_rank, "differ": len(differ),
                      "top1_without": sum(v[0] for v in off.values()), "top1_with": sum(v[0] for v in on.values())}))


if __name__ == "__main__":
    main()
