#!/usr/bin/env python3
"""Fingerprint speed on one core: the full fingerprint next to a bare imagehash.phash loop.

    python bench/fingerprint.py POOL_PHOTOS_DIR [--limit N] [--repeat 2]

Pins itself to one CPU (os.sched_setaffinity) and limits OpenCV/BLAS to one thread, then over
the same files measures:
  - phash-only:  imagehash.phash(Image.open(p)) (full decode)
  - phash-draft: the same with JPEG draft decoding to >= 1024 px
  - full:        engine.fingerprint.fingerprint(p) (load, a/d/pHash, PDQ, regions, keypoints, thumbnail)
  - the same with the Haar face pass left out (a comparison, not a mode of the engine): what
                 the rest of the fingerprint costs
and prints images/s and the share of time per fingerprint stage. Best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import engine.regions  # noqa: E402
from engine.fingerprint import fingerprint  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def timed(fn, files) -> float:
    t = time.perf_counter()
    for f in files:
        fn(f)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    import imagehash

    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in SUFFIXES)
    if args.limit:
        files = files[: args.limit]
    pixels = [Image.open(f).size for f in files]
    mp = statistics.median(w * h for w, h in pixels) / 1e6

    def draft(p):
        im = Image.open(p)
        im.draft("RGB", (1024, 1024))
        return imagehash.phash(im)

    stages: dict[str, float] = {}

    def full(p):
        fp = fingerprint(p)
        for k, v in fp.timings.items():
            stages[k] = stages.get(k, 0.0) + v

    def without_faces(p):  # the fingerprint with the Haar face pass left out: what the rest costs
        with mock.patch.object(engine.regions, "face_boxes", lambda image, grey=None: []):
            fingerprint(p)

    results = {}
    for name, fn in (("phash-only (imagehash, full decode)", lambda p: imagehash.phash(Image.open(p))),
                     ("phash-draft (imagehash, draft decode)", draft),
                     ("full fingerprint (engine)", full),
                     ("  the same without Haar faces", without_faces)):
        best = min(timed(fn, files) for _ in range(args.repeat))
        results[name] = len(files) / best
    print(f"{len(files)} images, median {mp:.2f} MP, one core")
    for name, rate in results.items():
        print(f"  {name:<40} {rate:7.1f} images/s  {1000 / rate:6.1f} ms/image")
    total = sum(stages.values())
    print("  full fingerprint, share of time per stage:")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<16} {100 * v / total:5.1f}%  {1000 * v / len(files) / args.repeat:6.1f} ms/image")


if __name__ == "__main__":
    main()
