"""The provenance benchmark's image set: originals and what was made from them, with the truth.

``build(pool, out, originals=40, seed=7)`` writes into ``out``:

- ``orig_NNN.jpg``: photos from ``pool/photos`` copied byte for byte (the pool's own JPEGs);
- ``crop_NNN_K.jpg``: a crop of an original keeping 30-60% of its area;
- ``cropcrop_NNN_K.jpg``: a crop of such a crop keeping 40-70% of the crop (half of the crops);
- ``edit_NNN_KIND.jpg``: one or two edited copies per original, KIND in resize (40-70% of the
  sides), jpeg (recompressed at quality 20-35), colour (brightness, contrast, saturation, gamma),
  gray, mirror;
- ``comp_NN.jpg``: composites of 2, 3 or 4 originals, each shrunk into a cell of a grid on a
  light canvas;
- ``neg_NNN.jpg``: unrelated pool photos (no parent, no child).

Derived images are saved as JPEG at quality 85 (``derived_quality``; the jpeg edit lower), as a
re-upload would be: an edit is a new encoding of its source. The pool's photos are JPEGs of
quality 88. ``truth.json`` maps every file to its kind, its parents
(the files it was made from) and its roots (the originals at the top of its chain).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

EDITS = ("resize", "jpeg", "colour", "gray", "mirror")
DERIVED_QUALITY = 85
MIN_SIDE = 300


def _usable(path: Path, seen: set[bytes]) -> Image.Image | None:
    try:
        im = Image.open(path)
        im.load()
    except OSError:
        return None
    if im.mode != "RGB" or min(im.size) < MIN_SIDE:
        return None
    grey = np.asarray(im.convert("L").resize((64, 64)), dtype=np.float32)
    if grey.std() < 12.0:  # near-uniform: nothing can tell such images apart
        return None
    key = np.asarray(im.convert("L").resize((16, 16))).tobytes()
    if key in seen:
        return None
    seen.add(key)
    return im


def _crop(im: Image.Image, area: float, rnd: random.Random) -> Image.Image:
    w, h = im.size
    side = area ** 0.5
    ar = rnd.uniform(0.8, 1.25)
    fw, fh = min(1.0, side * ar), min(1.0, side / ar)
    x0, y0 = rnd.uniform(0, 1 - fw), rnd.uniform(0, 1 - fh)
    return im.crop((int(x0 * w), int(y0 * h), int((x0 + fw) * w), int((y0 + fh) * h)))


def _edit(im: Image.Image, kind: str, rnd: random.Random, quality: int) -> tuple[Image.Image, int]:
    """(edited image, JPEG quality to save it at)."""
    if kind == "resize":
        s = rnd.uniform(0.4, 0.7)
        return im.resize((int(im.width * s), int(im.height * s)), Image.Resampling.BILINEAR), quality
    if kind == "jpeg":
        return im, rnd.randint(20, 35)
    if kind == "colour":
        out = ImageEnhance.Brightness(im).enhance(rnd.uniform(0.75, 1.25))
        out = ImageEnhance.Contrast(out).enhance(rnd.uniform(0.75, 1.35))
        out = ImageEnhance.Color(out).enhance(rnd.uniform(0.4, 1.6))
        gamma = rnd.uniform(0.75, 1.3)
        return out.point(lambda v: int(255 * (v / 255) ** gamma)), quality
    if kind == "gray":
        return im.convert("L").convert("RGB"), quality
    if kind == "mirror":
        return ImageOps.mirror(im), quality
    raise ValueError(kind)


def _composite(parts: list[Image.Image]) -> Image.Image:
    cols = len(parts) if len(parts) <= 3 else 2
    rows = (len(parts) + cols - 1) // cols
    cell = 600
    canvas = Image.new("RGB", (cols * cell, rows * cell), (248, 248, 246))
    for i, part in enumerate(parts):
        p = part.copy()
        p.thumbnail((cell - 24, cell - 24), Image.Resampling.LANCZOS)
        cx, cy = (i % cols) * cell, (i // cols) * cell
        canvas.paste(p, (cx + (cell - p.width) // 2, cy + (cell - p.height) // 2))
    return canvas


def build(pool: Path, out: Path, originals: int = 40, composites: int = 12, negatives: int = 20,
          seed: int = 7, derived_quality: int = DERIVED_QUALITY) -> dict:
    rnd = random.Random(seed)
    files = sorted((pool / "photos").rglob("*.jpg"))
    rnd.shuffle(files)
    seen: set[bytes] = set()
    chosen: list[tuple[Path, Image.Image]] = []
    for path in files:
        if len(chosen) >= originals + negatives:
            break
        im = _usable(path, seen)
        if im is not None:
            chosen.append((path, im))
    if len(chosen) < originals + negatives:
        raise SystemExit(f"only {len(chosen)} usable photos in {pool / 'photos'}")
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}

    def save(name: str, im: Image.Image, kind: str, parents: list[str], quality: int = derived_quality) -> None:
        im.save(out / name, "JPEG", quality=quality)
        roots = sorted({r for p in parents for r in truth[p]["roots"]})
        truth[name] = {"kind": kind, "parents": parents, "roots": roots}

    names = []
    for i, (path, im) in enumerate(chosen[:originals]):
        name = f"orig_{i:03d}.jpg"
        shutil.copyfile(path, out / name)
        truth[name] = {"kind": "original", "parents": [], "roots": [name], "pool": path.name}
        names.append((name, im))
    for i, (name, im) in enumerate(names):
        crop = _crop(im, rnd.uniform(0.3, 0.6), rnd)
        save(f"crop_{i:03d}_0.jpg", crop, "crop", [name])
        if i % 2 == 0:
            save(f"cropcrop_{i:03d}_0.jpg", _crop(crop, rnd.uniform(0.4, 0.7), rnd), "crop_of_crop",
                 [f"crop_{i:03d}_0.jpg"])
        first = i % len(EDITS)  # every kind as often; odd originals get a second, different edit
        kinds = [EDITS[first]] + ([EDITS[(first + 1 + (i // 2) % 4) % len(EDITS)]] if i % 2 else [])
        for kind in kinds:
            edited, quality = _edit(im, kind, rnd, derived_quality)
            save(f"edit_{i:03d}_{kind}.jpg", edited, kind, [name], quality)
    for c in range(composites):
        n = 2 + c % 3
        picks = rnd.sample(range(len(names)), n)
        save(f"comp_{c:02d}.jpg", _composite([names[k][1] for k in picks]), f"composite{n}",
             [names[k][0] for k in picks])
    for i, (path, _) in enumerate(chosen[originals:originals + negatives]):
        shutil.copyfile(path, out / f"neg_{i:03d}.jpg")
        truth[f"neg_{i:03d}.jpg"] = {"kind": "negative", "parents": [], "roots": [f"neg_{i:03d}.jpg"],
                                     "pool": path.name}
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return truth
