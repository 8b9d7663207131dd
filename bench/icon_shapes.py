#!/usr/bin/env python3
"""Icon shapes (engine.regions.shapes) on every icon of the pool, each flattened onto random colours.

    python bench/icon_shapes.py ../shared/eval/pool [--per-icon 4] [--seed 7] [--kit ../shared/eval]

The benchmark corpus has 34 icon_bg queries; this takes every icon of POOL/icons that
make_corpus.py would take (PNG, shorter side >= 96 px) and makes --per-icon queries of each with
the kit's own ``derive('icon_bg')`` (flattened onto a random colour, recoloured, resized), saved as
JPEG q88. Stored side: the icon as engine.loading loads it (flattened onto white, with its alpha
mask); query side: the JPEG, as a query. Only the 'shape' and 'cutout' regions are compared, by
the search's rule for them (engine.search): both within KIND_RADIUS (two agreeing hits), or one
within REGION_TRUSTED_BITS. Prints how many (query, icon) pairs that rule finds, how many shape
and cut-out hashes are within KIND_RADIUS, and how many *other* icons the rule would accept.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.loading import load_image  # noqa: E402
from engine.regions.shapes import shape_regions  # noqa: E402
from engine.search import KIND_RADIUS, REGION_TRUSTED_BITS  # noqa: E402

KINDS = ("shape", "cutout")


def regions(source: str | bytes, query: bool) -> dict:
    loaded = load_image(source, target_size=1024)  # as engine.fingerprint decodes
    return {r.kind: r.hash for r in shape_regions(loaded.image, loaded.alpha_mask, query=query)}


def bits(a: dict, b: dict, kind: str) -> int | None:
    return a[kind] - b[kind] if kind in a and kind in b else None


def accepted(query: dict, stored: dict) -> bool:
    close = [bits(query, stored, k) for k in KINDS]
    within = [d is not None and d <= KIND_RADIUS[k] for k, d in zip(KINDS, close, strict=True)]
    trusted = any(d is not None and d <= REGION_TRUSTED_BITS[k] for k, d in zip(KINDS, close, strict=True))
    return all(within) or trusted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", type=Path)
    ap.add_argument("--per-icon", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kit", type=Path, help="folder of make_corpus.py (default: the pool's parent)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.kit or args.pool.resolve().parent))
    from make_corpus import derive

    icons = [p for p in sorted(args.pool.joinpath("icons").rglob("*.png")) if min(Image.open(p).size) >= 96]
    stored = [regions(str(p), query=False) for p in icons]
    rnd = random.Random(args.seed)
    found, close, wrong, missed = 0, dict.fromkeys(KINDS, 0), 0, []
    n = 0
    for i, path in enumerate(icons):
        icon = Image.open(path).convert("RGBA")
        for _ in range(args.per_icon):
            image, _ = derive("icon_bg", [icon], None, None, rnd)
            buf = io.BytesIO()
            image.convert("RGB").save(buf, "JPEG", quality=88)
            query = regions(buf.getvalue(), query=True)
            n += 1
            for k in KINDS:
                d = bits(query, stored[i], k)
                close[k] += d is not None and d <= KIND_RADIUS[k]
            if accepted(query, stored[i]):
                found += 1
            else:
                missed.append((path.name, *(bits(query, stored[i], k) for k in KINDS)))
            wrong += sum(accepted(query, s) for j, s in enumerate(stored) if j != i)
    print(f"{len(icons)} icons, {n} queries: found by shape/cutout {found} ({found / n:.3f}); "
          + ", ".join(f"{k} within {KIND_RADIUS[k]} bits {close[k]}" for k in KINDS)
          + f"; other icons accepted {wrong}")
    print("stored icons with a shape:", sum("shape" in s for s in stored), "with a cutout:",
          sum("cutout" in s for s in stored))
    for name, shape_bits, cutout_bits in missed:
        print(f"  not found: {name} shape {shape_bits} cutout {cutout_bits} bits")


if __name__ == "__main__":
    main()
