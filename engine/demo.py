"""`imgsearch demo`: ingest the bundled sample photos, then search with images derived from them.

The derived queries are made on the fly with Pillow: a 30% crop, a mirrored and recoloured
copy, a face cut out of a portrait, a 2-up composite, a photo pasted onto another one, and an
unrelated photo that was held back (it must find nothing).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from . import db
from .fingerprint import fingerprint, query_fingerprint
from .model import Match
from .search import search
from .store import store

HELD_BACK = "scratch__lake.jpg"  # never ingested: the negative query


def sample_files() -> list[Path]:
    folder = resources.files("engine.samples")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith((".jpg", ".png")))


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


@dataclass(frozen=True)
class DemoQuery:
    title: str
    data: bytes
    expect: tuple[str, ...]  # sample names that should be found (empty: nothing)


def demo_queries(files: dict[str, Path]) -> list[DemoQuery]:
    def rgb(name: str) -> Image.Image:
        return Image.open(files[name]).convert("RGB")

    eiffel, cat, macaw, bridge = (rgb(n) for n in ("gcompris__eiffelTower.jpg", "skimage__chelsea.jpg",
                                                   "gcompris__scarlet_macaw.jpg", "palapeli__cincinnati-bridge.jpg"))
    hopper, lake = rgb("matplotlib__grace_hopper.jpg"), rgb(HELD_BACK)
    w, h = bridge.size
    crop = bridge.crop((int(w * 0.40), int(h * 0.30), int(w * 0.95), int(h * 0.85)))
    mirrored = ImageEnhance.Color(ImageOps.mirror(cat)).enhance(0.4)
    hw, hh = hopper.size
    face = hopper.crop((int(hw * 0.25), int(hh * 0.08), int(hw * 0.75), int(hh * 0.55)))
    canvas = Image.new("RGB", (1200, 600), (250, 250, 250))
    for i, part in enumerate((eiffel, macaw)):
        p = part.copy()
        p.thumbnail((580, 580))
        canvas.paste(p, (i * 600 + (600 - p.width) // 2, (600 - p.height) // 2))
    pasted = lake.resize((900, int(900 * lake.height / lake.width)))
    small = cat.copy()
    small.thumbnail((380, 380))
    pasted.paste(small, (420, 60))
    return [
        DemoQuery("a 30% crop of the bridge", _jpeg(crop), ("palapeli__cincinnati-bridge.jpg",)),
        DemoQuery("the cat, mirrored and desaturated", _jpeg(mirrored), ("skimage__chelsea.jpg",)),
        DemoQuery("a face cut from a portrait", _jpeg(face), ("matplotlib__grace_hopper.jpg",)),
        DemoQuery("a 2-up composite", _jpeg(canvas), ("gcompris__eiffelTower.jpg", "gcompris__scarlet_macaw.jpg")),
        DemoQuery("the cat pasted onto another photo", _jpeg(pasted), ("skimage__chelsea.jpg",)),
        DemoQuery("an unrelated photo", _jpeg(lake), ()),
    ]


def run_demo(out=print) -> tuple[int, int]:
    """Ingest the samples, run the demo queries; returns (queries answered as expected, queries)."""
    files = {p.name: p for p in sample_files()}
    with db.connect() as conn:
        out(f"ingesting {len(files) - 1} sample images ...")
        for name, path in files.items():
            if name != HELD_BACK:
                store(conn, fingerprint(path), f"sample:{name}")
        queries = demo_queries(files)
        good = 0
        for dq in queries:
            matches: list[Match] = search(conn, query_fingerprint(dq.data, name=dq.title))
            found = [m.uri.removeprefix("sample:") for m in matches if m.uri]
            ok = set(dq.expect) <= set(found[: max(1, len(dq.expect))]) if dq.expect else not found
            good += ok
            out(f"\n{'ok  ' if ok else 'MISS'} {dq.title}: {len(matches)} match(es)")
            for m in matches:
                flags = (" mirrored" if m.mirrored else "") + (" rotated" if m.rotated else "")
                box = ", ".join(f"{v:.2f}" for v in m.target_box)
                out(f"     score {m.score:>3}  {m.relation}{flags}  {m.uri}  shared part at [{box}]")
    return good, len(queries)
