#!/usr/bin/env python3
"""Train the ORB vocabulary tree shipped as engine/data/orb_vocab.npz.

    python bench/train_vocab.py FOLDER [FOLDER ...] [--exclude CORPUS/index] [--branching 10] [--depth 5]
                                [--refine 4] [--per-image 1500] [--seed 7] [--out engine/data/orb_vocab.npz]

Hierarchical k-majority (k-means for binary descriptors: Hamming distance, per-bit majority
as the centre, k-means++ seeding), the same on every run for the same images and seed; then, per leaf, the --refine
descriptor bits that split the leaf's training descriptors most evenly (see Vocabulary).
Descriptors come from engine.keypoints.extract at two working sizes, so the vocabulary sees
the scales queries bring. --exclude skips training images that are (near-)identical to an
image in another folder, e.g. the benchmark's index, so that the benchmark measures a
vocabulary that never saw the images it retrieves. The shipped file was made by

    python bench/train_vocab.py shared/eval/pool/photos shared/eval/pool/distractors \
        --exclude CORPUS/index --refine 6      # 152 images, 448k descriptors, ~3 minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.keypoints import Vocabulary, extract, hamming  # noqa: E402

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def load(path: Path) -> Image.Image:
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert("RGB")


def thumb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32)


def training_images(folders: list[Path], exclude: Path | None) -> list[Path]:
    files = sorted(p for f in folders for p in f.rglob("*") if p.suffix.lower() in EXTS)
    if exclude is None:
        return files
    taken = np.stack([thumb(load(p)) for p in sorted(exclude.iterdir()) if p.suffix.lower() in EXTS])
    keep = []
    for p in files:
        diff = np.abs(taken - thumb(load(p))).mean(axis=(1, 2))
        if diff.min() > 4.0:
            keep.append(p)
    return keep


def kmajority(data: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """k centres (k, 32) and each row's label; fewer than k distinct rows are padded by repetition."""
    if len(data) <= k:
        centres = np.concatenate([data, np.repeat(data[:1], k - len(data), axis=0)]) if len(data) else None
        return centres, np.arange(len(data))
    sample = data[rng.choice(len(data), min(len(data), 20000), replace=False)]
    centres = [sample[rng.integers(len(sample))]]
    nearest = hamming(sample, centres[0][None])[:, 0].astype(np.float64)
    for _ in range(1, k):  # k-means++
        weight = nearest**2
        pick = sample[rng.choice(len(sample), p=weight / weight.sum())] if weight.sum() else sample[0]
        centres.append(pick)
        nearest = np.minimum(nearest, hamming(sample, pick[None])[:, 0])
    centres = np.stack(centres)
    labels = np.zeros(len(data), dtype=np.int64)
    for _ in range(iterations):
        for start in range(0, len(data), 50000):
            labels[start:start + 50000] = hamming(data[start:start + 50000], centres).argmin(axis=1)
        moved = centres.copy()
        for c in range(k):
            members = data[labels == c]
            if len(members):
                moved[c] = np.packbits(np.unpackbits(members, axis=1).mean(axis=0) >= 0.5)
        if np.array_equal(moved, centres):
            break
        centres = moved
    return centres, labels


def balanced_bits(descriptors: np.ndarray, count: int, fallback: np.ndarray) -> np.ndarray:
    """The `count` bits that split these descriptors most evenly, skipping bits correlated with one already taken."""
    if len(descriptors) < 16:
        return fallback
    bits = np.unpackbits(descriptors, axis=1).astype(np.float32)
    balance = np.abs(bits.mean(axis=0) - 0.5)
    centred = bits - bits.mean(axis=0)
    chosen: list[int] = []
    for b in np.argsort(balance, kind="stable"):
        if len(chosen) == count:
            break
        if chosen:
            cov = centred[:, chosen].T @ centred[:, b]
            norm = np.sqrt((centred[:, chosen] ** 2).sum(axis=0) * (centred[:, b] ** 2).sum()) + 1e-9
            if np.abs(cov / norm).max() > 0.3:
                continue
        chosen.append(int(b))
    return np.array(chosen + list(fallback[len(chosen):]), dtype=np.uint8)


def train(descriptors: np.ndarray, branching: int, depth: int, seed: int, refine: int) -> Vocabulary:
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(descriptors))]  # training rows under each node of the current depth
    parents = np.zeros((1, 32), np.uint8)
    levels = []
    for level in range(depth):
        centres = np.zeros((len(groups) * branching, 32), np.uint8)
        below: list[np.ndarray] = []
        for node, rows in enumerate(groups):
            found, labels = kmajority(descriptors[rows], branching, rng)
            if found is None:  # no training data here: the children repeat the parent
                found = np.repeat(parents[node][None], branching, axis=0)
            centres[node * branching:(node + 1) * branching] = found
            below.extend(rows[labels == c] for c in range(branching))
        levels.append(centres)
        groups, parents = below, centres
        print(f"level {level + 1}: {len(centres)} nodes, {sum(len(g) > 0 for g in groups)} with data", flush=True)
    fallback = balanced_bits(descriptors[rng.choice(len(descriptors), min(len(descriptors), 100000), replace=False)],
                             refine, np.arange(refine, dtype=np.uint8))
    bits = np.stack([balanced_bits(descriptors[rows], refine, fallback) for rows in groups])
    return Vocabulary(branching, depth, tuple(levels), bits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--exclude", type=Path, help="skip training images near-identical to one in this folder")
    ap.add_argument("--branching", type=int, default=10)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--refine", type=int, default=4, help="descriptor bits per leaf appended to the leaf id")
    ap.add_argument("--per-image", type=int, default=1500, help="keypoints per image and working size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "engine/data/orb_vocab.npz")
    args = ap.parse_args()
    t0 = time.perf_counter()
    files = training_images(args.folders, args.exclude)
    chunks = []
    for p in files:
        im = load(p)
        for side in (1024, 512):
            chunks.append(extract(im, max_features=args.per_image, working_side=side).descriptors)
    descriptors = np.concatenate(chunks)
    print(f"{len(files)} images, {len(descriptors)} descriptors ({time.perf_counter() - t0:.0f} s)", flush=True)
    vocab = train(descriptors, args.branching, args.depth, args.seed, args.refine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    vocab.save(args.out)
    megabytes = args.out.stat().st_size / 1e6
    print(f"{vocab.size} words -> {args.out} ({megabytes:.1f} MB, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
