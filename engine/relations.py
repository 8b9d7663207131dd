"""Relations between two images: which one was made from the other, and how (pure geometry, no database).

Given a verified match between two images (engine.search's ``Match``: relation by frames,
shared boxes, mirrored/rotated), ``classify`` decides the edge:

- one image lies wholly inside the other: if the place it takes in the larger one is a picture
  found inside that picture (a cell of a collage, the photo inside a frame, a paste), the larger
  image is a composite made from it; otherwise the smaller one is a crop of the larger (unless it
  shows the shared part with more pixels than the larger has: then it was not cut from it);
- each shows a part of the other: only a composite explains that (the shared part is a picture
  inside one of them, made from a part of the other); otherwise no edge (two overlapping crops
  of one photo are siblings, not parent and child);
- both show all of the other (near-duplicates): the lesser copy is derived: fewer pixels, then a
  lower encoding quality (``encoding_quality``), then the later ingest;
- two collages that put the same photo into one of their pictures are siblings, however their
  frames align (``siblings``: where the matching keypoints lie).

``keeps_long`` is the triangle rule that hides implied edges in a lineage (the SQL view
``lineage_edges`` applies the same rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import verify as verifymod
from .explain import FULL, box_area, box_iou
from .model import Box, Keypoints, Match

PICTURE_IOU = 0.7  # the shared part is "a picture inside the picture" when it overlaps one this much
IN_ONE_PICTURE = 0.8  # this share of the matching keypoints inside one picture: the match is that picture
SAME_PICTURE_IOU = 0.5  # ... and that picture in one image lands on that in the other: siblings
MAX_PICTURE = 0.8  # larger "pictures" (a photo above a caption bar...) are the image itself here
MAX_UPSCALE = 1.25  # a crop showing the shared part with more pixels than this times its source's is not from it
PIXEL_RATIO = 1.1  # near-duplicates: this many times the pixels makes the source
QUALITY_STEP = 2  # near-duplicates of equal size: this much higher estimated JPEG quality makes the source
BYTES_RATIO = 1.02  # ... when a quality is unknown: this many times the bytes per pixel makes the source
LOSSLESS = {"PNG", "BMP"}

# The IJG (libjpeg) luminance quantisation table at quality 50; quality q scales it.
_STD_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
             14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def _ijg_table_sum(q: int) -> int:
    s = 5000 / q if q < 50 else 200 - 2 * q
    return sum(min(255, max(1, int((v * s + 50) // 100))) for v in _STD_LUMA)


_IJG_SUMS = {q: _ijg_table_sum(q) for q in range(1, 101)}


def jpeg_quality(luma_table) -> int:
    """The IJG quality (1-100) whose luminance table is closest to this one (by their sums)."""
    total = sum(luma_table)
    return min(_IJG_SUMS, key=lambda q: (abs(_IJG_SUMS[q] - total), -q))


def encoding_quality(fmt: str, file_size: int, metadata: dict, uris) -> int | None:
    """How well an image is encoded: 100 for lossless formats, a JPEG's estimated quality (from the
    ``jpeg_quality`` metadata when ingest recorded it, else from the quantisation table in the
    header of a local file that still has the stored size), None when unknown."""
    if metadata and metadata.get("jpeg_quality") is not None:
        return int(metadata["jpeg_quality"])
    if fmt in LOSSLESS:
        return 100
    if fmt != "JPEG":
        return None
    for uri in uris:
        path = Path(uri)
        try:
            if not path.is_absolute() or path.stat().st_size != file_size:
                continue
            with Image.open(path) as im:  # reads the header only
                table = (getattr(im, "quantization", None) or {}).get(0)
        except (OSError, ValueError):
            continue
        if table:
            return jpeg_quality(table)
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What orders two related images."""

    id: int | None  # None: a query that is not stored
    width: int
    height: int
    quality: int | None
    pictures: tuple[Box, ...] = ()
    file_size: int = 0  # bytes; 0: unknown

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bytes_per_pixel(self) -> float:
        return self.file_size / max(self.pixels, 1)

    @property
    def order(self) -> float:
        return math.inf if self.id is None else self.id


@dataclass(frozen=True)
class Edge:
    """derived was made from source. Boxes: where the shared part lies in each (fractions).
    The transform carries source pixels onto derived pixels: scale, then offset (tx, ty)."""

    source_id: int | None
    derived_id: int | None
    relation: str  # near_duplicate | crop | composite: what the derived image is to its source
    score: int
    source_box: Box
    derived_box: Box
    scale: float
    tx: float
    ty: float
    mirrored: bool = False
    rotated: bool = False

    def row(self) -> dict:
        return {"source_id": self.source_id, "derived_id": self.derived_id, "relation": self.relation,
                "score": self.score, "source_box": list(self.source_box), "derived_box": list(self.derived_box),
                "scale": self.scale, "tx": self.tx, "ty": self.ty, "mirrored": self.mirrored,
                "rotated": self.rotated}

    def transform(self) -> dict:
        return {"scale": round(self.scale, 4), "offset": [round(self.tx, 1), round(self.ty, 1)],
                "mirrored": self.mirrored, "rotated": self.rotated}


def _is_picture(info: ImageInfo, box: Box) -> bool:
    """Is this box (the frame of the other image mapped into this one) a picture found inside it?"""
    return any(box_iou(box, p) >= PICTURE_IOU for p in info.pictures)


def _picture_holding(info: ImageInfo, points) -> Box | None:
    """The picture inside the image that holds most of these points (fractions), if one holds IN_ONE_PICTURE."""
    if points is None or not len(points):
        return None
    x, y = points[:, 0], points[:, 1]
    best = max(info.pictures, default=None,
               key=lambda p: np.mean((x >= p[0]) & (x <= p[2]) & (y >= p[1]) & (y <= p[3])))
    if best is None or np.mean((x >= best[0]) & (x <= best[2]) & (y >= best[1]) & (y <= best[3])) < IN_ONE_PICTURE:
        return None
    return best


def _map_box(box: Box, m: Match) -> Box:
    """A box of the query carried into the stored image by the match's geometry (its two boxes)."""
    qb, tb = m.query_box, m.target_box
    sx = (tb[2] - tb[0]) / max(qb[2] - qb[0], 1e-9)
    sy = (tb[3] - tb[1]) / max(qb[3] - qb[1], 1e-9)
    if m.mirrored:
        x0, x1 = tb[2] - (box[2] - qb[0]) * sx, tb[2] - (box[0] - qb[0]) * sx
    else:
        x0, x1 = tb[0] + (box[0] - qb[0]) * sx, tb[0] + (box[2] - qb[0]) * sx
    return (x0, tb[1] + (box[1] - qb[1]) * sy, x1, tb[1] + (box[3] - qb[1]) * sy)


def siblings(q: ImageInfo, m: Match, s: ImageInfo, points) -> bool:
    """Were both images made by putting the same picture into them (two collages sharing a photo)?
    Then the matching keypoints lie inside one picture in each, and the two pictures are one under
    the match's geometry."""
    if points is None:
        return False
    pq, ps = _picture_holding(q, points[0]), _picture_holding(s, points[1])
    return pq is not None and ps is not None and box_iou(_map_box(pq, m), ps) >= SAME_PICTURE_IOU


def matching_points(q_kp: Keypoints | None, s_kp: Keypoints | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the keypoints that match lie in each image (fractions). The frames' overlap can say much
    more: two collages of one layout that share one photo overlap frame for frame."""
    if q_kp is None or s_kp is None:
        return None
    v = verifymod.verify(q_kp, s_kp)
    if v is None or v.pairs is None or not len(v.pairs):
        return None
    return tuple(np.asarray(kp.xy, np.float64)[idx] / np.array(kp.size, np.float64)
                 for kp, idx in ((q_kp, v.pairs[:, 0]), (s_kp, v.pairs[:, 1])))


def lesser_copy(a: ImageInfo, b: ImageInfo) -> bool:
    """Of two near-duplicates, is a the one made from b? Fewer pixels, else a lower encoding quality
    (when either quality is unknown: fewer bytes per pixel), else ingested later."""
    if a.pixels * PIXEL_RATIO < b.pixels or b.pixels * PIXEL_RATIO < a.pixels:
        return a.pixels < b.pixels
    if a.quality is not None and b.quality is not None:
        if abs(a.quality - b.quality) >= QUALITY_STEP:
            return a.quality < b.quality
    elif a.file_size and b.file_size:
        ra, rb = a.bytes_per_pixel, b.bytes_per_pixel
        if max(ra, rb) >= BYTES_RATIO * min(ra, rb):
            return ra < rb
    return a.order > b.order


def _edge(source: ImageInfo, derived: ImageInfo, relation: str, m: Match, query_is_derived: bool) -> Edge:
    derived_box, source_box = (m.query_box, m.target_box) if query_is_derived else (m.target_box, m.query_box)
    ws, hs, wd, hd = source.width, source.height, derived.width, derived.height
    scale = math.sqrt(max(box_area(derived_box) * wd * hd, 1e-9) / max(box_area(source_box) * ws * hs, 1e-9))
    sx = source_box[2] if m.mirrored else source_box[0]  # the source edge that lands on the derived box's left
    tx = derived_box[0] * wd - (-scale if m.mirrored else scale) * sx * ws
    ty = derived_box[1] * hd - scale * source_box[1] * hs
    return Edge(source.id, derived.id, relation, int(m.score), tuple(map(float, source_box)),
                tuple(map(float, derived_box)), round(float(scale), 4), round(float(tx), 1), round(float(ty), 1),
                bool(m.mirrored), bool(m.rotated))


def classify(q: ImageInfo, m: Match, s: ImageInfo, points: tuple[np.ndarray, np.ndarray] | None = None) -> Edge | None:
    """The edge between a query image q and a stored image s that search matched (m), or None.

    points: where the matching keypoints lie in q and in s, when both hold pictures inside them:
    when that is inside one picture in each, both were made from the same picture (siblings, no edge)."""
    if siblings(q, m, s, points):
        return None
    if m.relation in ("duplicate", "near_duplicate"):
        if lesser_copy(q, s):
            return _edge(s, q, "near_duplicate", m, True)
        return _edge(q, s, "near_duplicate", m, False)
    q_inside = m.relation == "crop"
    s_inside = m.relation == "contains" or (m.relation == "composite" and box_area(m.target_box) >= FULL)
    if q_inside or s_inside:
        big, big_box = (s, m.target_box) if q_inside else (q, m.query_box)
        small = q if q_inside else s
        if _is_picture(big, big_box):
            return _edge(small, big, "composite", m, not q_inside)
        e = _edge(big, small, "crop", m, q_inside)
        return e if e.scale <= MAX_UPSCALE else None
    if _is_picture(q, m.query_box):
        return _edge(s, q, "composite", m, True)
    if _is_picture(s, m.target_box):
        return _edge(q, s, "composite", m, False)
    return None


def pictures(boxes) -> tuple[Box, ...]:
    """The pictures inside a picture that can be the place of another image (not the whole frame)."""
    return tuple(tuple(b) for b in boxes if box_area(b) <= MAX_PICTURE)


def keeps_long(xz: str, zy: str, xy: str) -> bool:
    """In a triangle X -> Z -> Y with X -> Y, does Y hang under X (Z -> Y hidden) rather than under Z?
    As the SQL function lineage_keeps_long (sql/migrations/0004_edges.sql)."""
    return xz == "near_duplicate" or (xz == "composite" and zy == "crop") or (
        xz == "crop" and zy == "composite" and xy == "near_duplicate")
