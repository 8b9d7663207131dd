"""Agreement and speed of engine.pdq against the reference ``pdqhash`` package.

Usage: .venv/bin/python bench/pdq.py POOL [--repeat N]     (engine installed, e.g. pip install -e .)

POOL is a folder holding photos/ (searched recursively for *.jpg, *.jpeg, *.png, *.webp).
Prints, over every photo: the Hamming distance between our hash and pdqhash.compute (all photos
and those of quality >= 80), quality agreement, our 8 dihedral variants against
pdqhash.compute_dihedral, the variants against the hashes of the actually rotated/mirrored
images (ours and the reference's), and the time per image for both implementations.
Without pdqhash only our own figures are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from engine.hashes import dihedral
from engine.model import Hash
from engine.pdq import DIHEDRAL_NAMES, REFERENCE_DIHEDRAL_ORDER, pdq_dihedral, pdq_hash

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}

def reference():
    try:
        import pdqhash
    except ImportError:
        return None
    return pdqhash


def summary(values: list[int] | np.ndarray) -> str:
    array = np.asarray(values)
    return f"mean {array.mean():.2f}  p95 {np.percentile(array, 95):.0f}  max {array.max()}"


def timing(all_ms: list[float], large_ms: list[float]) -> str:
    text = f"median {statistics.median(all_ms):.2f}  mean {statistics.mean(all_ms):.2f}"
    if large_ms:
        text += f"  | {len(large_ms)} photos of >= 0.7 MP: median {statistics.median(large_ms):.2f}"
    return text


def best_time(function: Callable[[], object], repeat: int) -> float:
    """Smallest of `repeat` wall times, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pool", type=Path)
    parser.add_argument("--repeat", type=int, default=5, help="timing repetitions per image (best kept)")
    args = parser.parse_args()

    paths = sorted(p for p in (args.pool / "photos").rglob("*") if p.suffix.lower() in SUFFIXES)
    if not paths:
        sys.exit(f"no photos under {args.pool / 'photos'}")
    pdqhash = reference()

    distance, distance_q80, quality_delta, qualities, megapixels = [], [], [], [], []
    vs_reference_dihedral: dict[str, list[int]] = {name: [] for name in DIHEDRAL_NAMES}
    vs_transformed: dict[str, list[int]] = {name: [] for name in DIHEDRAL_NAMES}
    reference_vs_transformed: dict[str, list[int]] = {name: [] for name in DIHEDRAL_NAMES}
    ours_ms, reference_ms, ours_ms_1mp, reference_ms_1mp = [], [], [], []

    for path in paths:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        mp = width * height / 1e6
        megapixels.append(mp)
        ours, quality = pdq_hash(image)
        variants, _ = pdq_dihedral(image)
        qualities.append(quality)
        ours_ms.append(best_time(lambda image=image: pdq_hash(image), args.repeat))
        if mp >= 0.7:
            ours_ms_1mp.append(ours_ms[-1])

        moved_images = dict(dihedral(image))
        for name, moved_image in moved_images.items():
            vs_transformed[name].append(variants[name] - pdq_hash(moved_image)[0])

        if pdqhash is None:
            continue
        rgb = np.asarray(image)
        vector, ref_quality = pdqhash.compute(rgb)
        d = ours - Hash.from_bools(vector)
        distance.append(d)
        if ref_quality >= 80:
            distance_q80.append(d)
        quality_delta.append(quality - ref_quality)
        ref_variants, _ = pdqhash.compute_dihedral(rgb)
        for name, vec in zip(REFERENCE_DIHEDRAL_ORDER, ref_variants, strict=True):
            vs_reference_dihedral[name].append(variants[name] - Hash.from_bools(vec))
            moved = np.ascontiguousarray(np.asarray(moved_images[name]))
            reference_vs_transformed[name].append(Hash.from_bools(vec) - Hash.from_bools(pdqhash.compute(moved)[0]))
        reference_ms.append(best_time(lambda rgb=rgb: pdqhash.compute(np.asarray(rgb)), args.repeat))
        if mp >= 0.7:
            reference_ms_1mp.append(reference_ms[-1])

    print(
        f"{len(paths)} photos under {args.pool / 'photos'}: {min(megapixels):.2f}..{max(megapixels):.2f} MP "
        f"(median {statistics.median(megapixels):.2f}); quality median {statistics.median(qualities)}, "
        f"{sum(q >= 80 for q in qualities)} at >= 80"
    )
    if pdqhash is None:
        print("pdqhash is not importable: no agreement figures")
    else:
        print("\nagreement with pdqhash.compute (Hamming distance, bits of 256)")
        print(f"  all photos    {summary(distance)}  exact {sum(d == 0 for d in distance)}/{len(distance)}")
        print(f"  quality >= 80 {summary(distance_q80)}  over 10 bits: {sum(d > 10 for d in distance_q80)}")
        deltas = np.abs(quality_delta)
        print(f"  quality: equal {int((deltas == 0).sum())}/{len(deltas)}, max |difference| {deltas.max()}")
        print("\ndihedral variants against pdqhash.compute_dihedral (same order, renamed)")
        for name in DIHEDRAL_NAMES:
            print(f"  {name:14s} {summary(vs_reference_dihedral[name])}")

    print("\ndihedral variants against the hash of the actually transformed image (PIL rotate / ImageOps.mirror)")
    print(f"  {'':14s} {'ours':34s} {'pdqhash' if pdqhash else ''}")
    for name in DIHEDRAL_NAMES:
        theirs = summary(reference_vs_transformed[name]) if pdqhash else ""
        print(f"  {name:14s} {summary(vs_transformed[name]):34s} {theirs}")

    print(f"\ntime per image, from a decoded PIL RGB image, best of {args.repeat} runs (ms)")
    print(f"  ours     {timing(ours_ms, ours_ms_1mp)}")
    if pdqhash is not None:
        print(f"  pdqhash  {timing(reference_ms, reference_ms_1mp)}")


if __name__ == "__main__":
    main()
