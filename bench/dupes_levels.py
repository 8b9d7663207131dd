#!/usr/bin/env python3
"""How far apart are edited copies, and unrelated images, in pHash and PDQ bits? (imgsearch dupes levels)

    python bench/dupes_levels.py /work/shared/eval/pool [--limit N]

For every image of the pool (photos, icons, look-alike distractors) it makes edited copies in
three classes and prints, per edit, the share of copies whose global pHash is within r bits
and PDQ within p bits of the original, for the (r, p) of each level of ``imgsearch dupes``;
then, over every pair of distinct pool images, how many unrelated pairs each level would
group (false pairs). Hashes: engine.hashes.phash and engine.pdq.pdq_hash on engine.loading.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import hashes, pdq  # noqa: E402
from engine.dupes import LEVELS, Level  # noqa: E402
from engine.loading import load_image  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def crop(im: Image.Image, share: float) -> Image.Image:
    w, h = im.size
    dx, dy = int(w * share), int(h * share)
    return im.crop((dx, dy, w - dx, h - dy))


def caption(im: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    draw.rectangle((0, int(h * 0.88), w, h), fill=(0, 0, 0))
    draw.text((10, int(h * 0.9)), "imgsearch caption " * 3, fill=(255, 255, 255))
    return out


def border(im: Image.Image, share: float) -> Image.Image:
    w, h = im.size
    out = Image.new("RGB", (int(w * (1 + 2 * share)), int(h * (1 + 2 * share))), (255, 255, 255))
    out.paste(im, (int(w * share), int(h * share)))
    return out


EDITS = {
    "near-identical": {
        "jpeg q70": lambda im: jpeg(im, 70),
        "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
        "resize 50% + jpeg q80": lambda im: jpeg(im.resize((im.width // 2, im.height // 2)), 80),
        "png (lossless)": lambda im: im,
    },
    "light edits": {
        "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
        "contrast +30%": lambda im: ImageEnhance.Contrast(im).enhance(1.3),
        "grey": lambda im: im.convert("L").convert("RGB"),
        "blur r1": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
        "jpeg q30": lambda im: jpeg(im, 30),
        "crop 2% each side": lambda im: crop(im, 0.02),
    },
    "heavier edits": {
        "crop 5% each side": lambda im: crop(im, 0.05),
        "caption bar 12%": caption,
        "white border 5%": lambda im: border(im, 0.05),
        "saturation x2 + brightness -15%": lambda im: ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(2.0))
        .enhance(0.85),
        "rotate 3 deg": lambda im: im.rotate(3, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)),
    },
}


def hash_pair(im: Image.Image) -> tuple[int, np.ndarray]:
    h, _ = pdq.pdq_hash(im)
    bits = np.array([int(c) for c in h.bitstring()], dtype=np.uint8)
    return hashes.phash(im).value, bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", type=Path)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--levels", default="", help="other thresholds to compare, e.g. a=4/32,b=10/72")
    args = ap.parse_args()
    levels = dict(LEVELS)
    for spec in filter(None, args.levels.split(",")):
        name, _, bits = spec.partition("=")
        ph, _, pq = bits.partition("/")
        levels[name] = Level(int(ph), int(pq))
    files = sorted(p for p in args.pool.rglob("*") if p.suffix.lower() in SUFFIXES)
    if args.limit:
        files = files[: args.limit]
    originals, dist = [], {name: [] for cls in EDITS.values() for name in cls}
    for f in files:
        im = load_image(f, target_size=1024).image
        ph, pq = hash_pair(im)
        originals.append((ph, pq))
        for cls in EDITS.values():
            for name, edit in cls.items():
                eh, eq = hash_pair(edit(im))
                dist[name].append(((ph ^ eh).bit_count(), int(np.count_nonzero(pq != eq))))
    print(f"{len(files)} images; share of edited copies a level groups with their original (pHash bits / PDQ bits):")
    head = "".join(f" | {lv} (<= {t.phash}/{t.pdq})" for lv, t in levels.items())
    print(f"| class | edit | median pHash | median PDQ{head} |")
    print("|---|---|---|---" + "|---" * len(levels) + "|")
    for cls, edits in EDITS.items():
        for name in edits:
            d = np.array(dist[name])
            shares = "".join(f" | {np.mean((d[:, 0] <= t.phash) & (d[:, 1] <= t.pdq)):.2f}" for t in levels.values())
            print(f"| {cls} | {name} | {int(np.median(d[:, 0]))} | {int(np.median(d[:, 1]))}{shares} |")
    ph = np.array([o[0] for o in originals], dtype=np.uint64)
    pq = np.stack([o[1] for o in originals])
    false = dict.fromkeys(levels, 0)
    closest = []
    for i in range(len(files)):
        x = np.bitwise_xor(ph[i + 1:], ph[i])
        pbits = np.array([int(v).bit_count() for v in x])
        qbits = np.count_nonzero(pq[i + 1:] != pq[i], axis=1)
        for lv, t in levels.items():
            false[lv] += int(np.sum((pbits <= t.phash) & (qbits <= t.pdq)))
        closest.extend((int(a), int(b), files[i].name, files[i + 1 + k].name)
                       for k, (a, b) in enumerate(zip(pbits, qbits, strict=True)) if a <= 12)
    pairs = len(files) * (len(files) - 1) // 2
    print(f"\nunrelated pairs ({pairs}) a level would group: " + ", ".join(f"{lv} {n}" for lv, n in false.items()))
    print("closest unrelated pairs by pHash (pHash bits, PDQ bits):")
    for a, b, x, y in sorted(closest)[:15]:
        print(f"  {a:2d} {b:3d}  {x}  {y}")


if __name__ == "__main__":
    main()
