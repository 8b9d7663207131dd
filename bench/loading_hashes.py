"""Time image loading + hashing, and check our hashes against imagehash, on a folder of photos.

    .venv/bin/python bench/loading_hashes.py /work/shared/eval/pool/photos [--targets 1024,512] [--cpu 0]

For every image file directly in the folder (sorted), single-threaded:
  (a) engine.loading.load_image(path, target_size=T) + engine.hashes.phash
  (b) imagehash.phash(Image.open(path))                     full decode
  (c) the same with Image.draft('RGB', ...) for target T     reduced JPEG decode
  (d) engine.hashes.global_hashes on the loaded image        aHash + dHash + pHash + 8 dihedral pHashes
and the Hamming distance between our pHash of the load_image(target_size=T) picture and imagehash's
pHash of the full decode. It also counts exact agreement with imagehash (global hashes, the 8
dihedral pHashes against pHashes of the transformed images, and 4 region pHashes per image).
Needs the test extra (ImageHash).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import imagehash
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import hashes  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.loading import load_image  # noqa: E402
from engine.model import Hash  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
BOXES = [(0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75), (0.1, 0.3, 0.9, 0.7), (0.5, 0.0, 1.0, 1.0)]


def ref(h: imagehash.ImageHash) -> Hash:
    return Hash.from_bools(h.hash.flatten())


def timed(paths: list[Path], work: Callable[[Path], object]) -> tuple[list[float], list[object]]:
    times, results = [], []
    for path in paths:
        started = time.perf_counter()
        results.append(work(path))
        times.append(time.perf_counter() - started)
    return times, results


def summary(label: str, times: list[float]) -> str:
    mean = statistics.fmean(times)
    return (
        f"{label:<58} mean {mean * 1e3:6.2f} ms  median {statistics.median(times) * 1e3:6.2f} ms  "
        f"p95 {sorted(times)[int(0.95 * (len(times) - 1))] * 1e3:6.2f} ms  = {1 / mean:6.1f} img/s"
    )


def imagehash_phash_draft(path: Path, target: int) -> Hash:
    with Image.open(path) as im:
        longer = max(im.size)
        if im.format == "JPEG" and target < longer:
            im.draft("RGB", (math.ceil(im.width * target / longer), math.ceil(im.height * target / longer)))
        return ref(imagehash.phash(im))


def imagehash_phash_full(path: Path) -> Hash:
    with Image.open(path) as im:
        return ref(imagehash.phash(im))


def agreement(paths: list[Path]) -> str:
    """Exact equality with imagehash on the images as load_image returns them (full size)."""
    counts = {"global": 0, "dihedral": 0, "boxes": 0}
    for path in paths:
        image = load_image(path).image
        ours = hashes.global_hashes(image)
        theirs = (imagehash.average_hash(image), imagehash.dhash(image), imagehash.phash(image))
        counts["global"] += (ours.ahash, ours.dhash, ours.phash) == tuple(ref(h) for h in theirs)
        by_name = ours.dihedral_by_name()
        counts["dihedral"] += all(by_name[n] == ref(imagehash.phash(t)) for n, t in hashes.dihedral(image))
        crops = [image.crop(hashes.box_pixels(b, image.size)) for b in BOXES]
        counts["boxes"] += hashes.phash_boxes(image, BOXES) == [ref(imagehash.phash(c)) for c in crops]
    n = len(paths)
    return "exact agreement with imagehash: " + ", ".join(f"{k} {v}/{n}" for k, v in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--targets", default="1024,512", help="comma-separated target_size values")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    paths = sorted(p for p in args.folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    sizes = []
    for path in paths:  # warm the page cache, and describe the set
        path.read_bytes()
        with Image.open(path) as im:
            sizes.append(max(im.size))
    print(f"{len(paths)} images in {args.folder}, longer side {min(sizes)}-{max(sizes)} px "
          f"(median {statistics.median(sizes):.0f}), Pillow {Image.__version__}, imagehash {imagehash.__version__}")
    settings = load_settings()
    load_image(paths[0], settings=settings, target_size=1024)  # imports, first-call setup

    full_times, full = timed(paths, imagehash_phash_full)
    print(summary("(b) imagehash.phash(Image.open(p)), full decode", full_times))
    for target in (int(t) for t in args.targets.split(",")):
        def ours_at(path: Path, t: int = target) -> Hash:
            return hashes.phash(load_image(path, settings=settings, target_size=t).image)

        ours_times, ours = timed(paths, ours_at)
        draft_times, _ = timed(paths, lambda p, t=target: imagehash_phash_draft(p, t))
        loaded = [load_image(p, settings=settings, target_size=target).image for p in paths]
        global_times = []
        for image in loaded:
            started = time.perf_counter()
            hashes.global_hashes(image)
            global_times.append(time.perf_counter() - started)
        reduced = sum(image.size != Image.open(p).size for image, p in zip(loaded, paths, strict=True))
        print(f"--- target_size={target}: {reduced}/{len(paths)} images decoded at a reduced scale")
        print(summary(f"(a) load_image(p, target_size={target}) + our phash", ours_times))
        print(summary(f"(c) imagehash.phash with draft for {target}", draft_times))
        print(summary("(d) global_hashes: a/d/pHash + 8 dihedral pHashes", global_times))
        distances = [a - b for a, b in zip(ours, full, strict=True)]
        print(f"    bits between our pHash (target {target}) and imagehash on the full decode: "
              f"mean {statistics.fmean(distances):.2f}, max {max(distances)}, "
              f"identical {distances.count(0)}/{len(distances)}")
    print(agreement(paths))


if __name__ == "__main__":
    main()
