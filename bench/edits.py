#!/usr/bin/env python3
"""Search quality on edits that the benchmark kit's make_corpus.py does not make.

    python bench/edits.py POOL [--sources 60] [--seed 3] [--out /tmp/edits] [--keep]

The kit's corpus is what the engine was tuned on; this set checks that it generalises. From
POOL (the kit's pool/) it takes ``--sources`` photos (a third of them portraits), 12 icons and
all the look-alike distractors as the index, and 20 other photos as unrelated negatives. Each
source gets one query per edit below (icons only the edits that make sense for them), seeded:

  stretch       aspect changed (height x0.75)          rotate15 / rotate45  turned, corners cut
  noise         Gaussian noise, sigma 12               blur        Gaussian blur, radius 2.5
  jpeg10        JPEG quality 10                        tiny        longer side 96 px
  upscale       2x bicubic                             watermark   large translucent text across it
  screenshot    at 55% inside a UI frame (bars)        crop_mirror 50%-area crop, mirrored
  crop_rotate   60%-area crop turned 3 degrees         perspective mild keystone warp
  posterize     3 bits per channel                     collage6    one of 6 cells of a 3x2 grid
  crop_corner   20%-area crop from a corner            combo       crop 70%, resize 50%, JPEG 40, saturation x1.4

It ingests the index with ``imgsearch ingest`` into a fresh embedded database (a temporary
IMGSEARCH_HOME), runs ``imgsearch search --json`` on every query, and prints recall@1 per edit
and the false-positive rate on negatives (any match at all), as run_eval.py does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

PHOTO_EDITS = ["stretch", "rotate15", "rotate45", "noise", "blur", "jpeg10", "tiny", "upscale", "watermark",
               "screenshot", "crop_mirror", "crop_rotate", "perspective", "posterize", "collage6", "crop_corner",
               "combo"]
ICON_EDITS = ["stretch", "noise", "blur", "jpeg10", "tiny", "upscale", "screenshot", "posterize", "collage6"]
MAX_SIDE = 1200


def rgb(path: Path) -> Image.Image:
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        flat = Image.new("RGB", im.size, "white")
        flat.paste(im, mask=im.getchannel("A"))
        im = flat
    im = im.convert("RGB")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return im


def crop_area(im: Image.Image, area: float, rnd: random.Random, corner: bool = False) -> Image.Image:
    w, h = im.size
    side = math.sqrt(area)
    cw, ch = int(w * side), int(h * side)
    if corner:
        x0, y0 = rnd.choice([(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)])
    else:
        x0, y0 = rnd.randrange(0, w - cw + 1), rnd.randrange(0, h - ch + 1)
    return im.crop((x0, y0, x0 + cw, y0 + ch))


def rotate_cut(im: Image.Image, degrees: float) -> Image.Image:
    """Turned and cropped to the largest centred rectangle without the filled corners."""
    w, h = im.size
    turned = im.rotate(degrees, resample=Image.BICUBIC, expand=False)
    a = math.radians(abs(degrees))
    # the largest axis-aligned rectangle of the image's aspect inside the turned one
    k = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
    cw, ch = int(w * k), int(h * k)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))


def edit(kind: str, im: Image.Image, others: list[Image.Image], rnd: random.Random) -> Image.Image:
    w, h = im.size
    if kind == "stretch":
        return im.resize((w, int(h * 0.75)), Image.LANCZOS)
    if kind == "rotate15":
        return rotate_cut(im, rnd.choice([-15, 15]))
    if kind == "rotate45":
        return rotate_cut(im, 45)
    if kind == "noise":
        a = np.asarray(im, dtype=np.float32) + np.random.default_rng(rnd.randrange(1 << 30)).normal(0, 12, (h, w, 3))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if kind == "jpeg10":  # the quality is set when the query is saved
        return im
    if kind == "blur":
        return im.filter(ImageFilter.GaussianBlur(2.5))
    if kind == "tiny":
        small = im.copy()
        small.thumbnail((96, 96), Image.LANCZOS)
        return small
    if kind == "upscale":
        return im.resize((w * 2, h * 2), Image.BICUBIC)
    if kind == "watermark":
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        font = ImageFont.load_default(size=max(16, h // 8))
        for i, y in enumerate(range(0, h, max(1, h // 4))):
            draw.text((w * 0.05 + (i % 2) * w * 0.1, y), "© SAMPLE", font=font, fill=(255, 255, 255, 110))
        return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
    if kind == "screenshot":
        canvas = Image.new("RGB", (1280, 800), (236, 236, 240))
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, 0, 1280, 56), fill=(40, 44, 52))
        draw.rectangle((0, 56, 220, 800), fill=(250, 250, 250))
        for y in range(90, 760, 40):
            draw.rectangle((20, y, 200, y + 18), fill=(200, 204, 210))
        shot = im.copy()
        shot.thumbnail((int(1060 * 0.85), int(744 * 0.85)), Image.LANCZOS)
        canvas.paste(shot, (240 + (1040 - shot.width) // 2, 66 + (724 - shot.height) // 2))
        return canvas
    if kind == "crop_mirror":
        return ImageOps.mirror(crop_area(im, 0.5, rnd))
    if kind == "crop_rotate":
        return rotate_cut(crop_area(im, 0.6, rnd), 3)
    if kind == "perspective":
        d = 0.08
        quad = (w * d, 0, 0, h, w, h, w * (1 - d), 0)  # upper-left, lower-left, lower-right, upper-right
        return im.transform(im.size, Image.QUAD, quad, Image.BICUBIC)
    if kind == "posterize":
        return ImageOps.posterize(im, 3)
    if kind == "collage6":
        cell = (400, 300)
        canvas = Image.new("RGB", (cell[0] * 3, cell[1] * 2), "white")
        pos = rnd.randrange(6)
        pics = rnd.sample(others, 5)
        pics.insert(pos, im)
        for i, p in enumerate(pics):
            t = ImageOps.fit(p, cell, Image.LANCZOS)
            canvas.paste(t, ((i % 3) * cell[0], (i // 3) * cell[1]))
        return canvas
    if kind == "crop_corner":
        return crop_area(im, 0.2, rnd, corner=True)
    if kind == "combo":
        c = crop_area(im, 0.7, rnd)
        c = c.resize((max(1, c.width // 2), max(1, c.height // 2)), Image.LANCZOS)
        return ImageEnhance.Color(c).enhance(1.4)
    raise ValueError(kind)


def build(pool: Path, out: Path, n_sources: int, seed: int) -> dict:
    rnd = random.Random(seed)
    photos = sorted(p for p in (pool / "photos").rglob("*.*") if "faces" not in p.parts)
    portraits = sorted((pool / "photos" / "faces").glob("*.*"))
    icons = sorted((pool / "icons").glob("*.png"))
    distractors = sorted((pool / "distractors").glob("*.*"))
    rnd.shuffle(photos)
    rnd.shuffle(portraits)
    n_portraits = min(len(portraits), n_sources // 3)
    sources = portraits[:n_portraits] + photos[: n_sources - n_portraits]
    negatives = photos[n_sources - n_portraits: n_sources - n_portraits + 20]
    icon_sources = rnd.sample(icons, min(12, len(icons)))
    (out / "index").mkdir(parents=True)
    (out / "queries").mkdir()
    backgrounds = [rgb(p) for p in photos[-30:]]
    truth = []
    for i, path in enumerate(sources + icon_sources + distractors):
        shutil.copy(path, out / "index" / f"{i:04d}_{path.name}")
    for i, path in enumerate(sources + icon_sources):
        im = rgb(path)
        stored = str((out / "index" / f"{i:04d}_{path.name}").resolve())
        for kind in (PHOTO_EDITS if i < len(sources) else ICON_EDITS):
            q = edit(kind, im, backgrounds, rnd)
            name = f"{kind}_{i:04d}.jpg"
            q.save(out / "queries" / name, quality=10 if kind == "jpeg10" else (40 if kind == "combo" else 90))
            truth.append({"query": name, "edit": kind, "source": stored})
    for j, path in enumerate(negatives):
        name = f"negative_{j:04d}.jpg"
        rgb(path).save(out / "queries" / name, quality=90)
        truth.append({"query": name, "edit": "negative", "source": None})
    return {"queries": truth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", type=Path)
    ap.add_argument("--sources", type=int, default=60)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, help="where the set is written (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the set and the database")
    ap.add_argument("--imgsearch", default=shutil.which("imgsearch") or "imgsearch")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="imgsearch-edits-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty")
    truth = build(args.pool, out, args.sources, args.seed)
    env = dict(os.environ)
    env.setdefault("IMGSEARCH_HOME", str(out / "home"))
    r = subprocess.run([args.imgsearch, "ingest", "--json", str((out / "index").resolve())], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ingest failed ({r.returncode}): {r.stderr[-2000:]}")
    results: dict[str, list[str]] = {}
    queries = [str((out / "queries" / q["query"]).resolve()) for q in truth["queries"]]
    for k in range(0, len(queries), 50):
        r = subprocess.run([args.imgsearch, "search", "--json", *queries[k: k + 50]], env=env,
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):
            sys.exit(f"search failed ({r.returncode}): {r.stderr[-2000:]}")
        for line in r.stdout.splitlines():
            row = json.loads(line)
            results[Path(row["query"]).name] = [m["uri"] for m in row.get("matches", [])]
    per: dict[str, list[int]] = {}
    for q in truth["queries"]:
        got = results.get(q["query"], [])
        ok = (not got) if q["source"] is None else bool(got) and got[0] == q["source"]
        per.setdefault(q["edit"], []).append(int(ok))
    print(f"{len(truth['queries'])} queries, set in {out}")
    print("| edit | n | recall@1 |\n|---|---|---|")
    for kind in [*PHOTO_EDITS, "negative"]:
        if kind in per:
            v = per[kind]
            label = "no false match" if kind == "negative" else "recall@1"
            print(f"| {kind} | {len(v)} | {sum(v) / len(v):.2f}{' (' + label + ')' if kind == 'negative' else ''} |")
    if not args.keep and args.out is None:
        subprocess.run([args.imgsearch, "db", "stop"], env=env, capture_output=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
