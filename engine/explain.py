"""Explain a match: how the query relates to a stored image, where the shared part lies, a score.

Every kind of evidence (an exact or global-hash match, region hashes that agree, local
features verified by RANSAC) ends as one `Similarity`: the map from query pixels to stored
pixels. From it follow, by pure geometry:

- the shared part in each image (`query_box`, `target_box`, fractions x0, y0, x1, y1);
- the relation, from how much of each frame the other covers:

  | query covered | stored covered | relation                                              |
  |---------------|----------------|-------------------------------------------------------|
  | >= 0.85       | >= 0.85        | duplicate (same bytes or pixels) / near_duplicate     |
  | >= 0.85       | <  0.85        | crop: the query is a part of the match                |
  | <  0.85       | >= 0.85        | contains: the match is a part of the query            |
  | <  0.85       | <  0.85        | composite: each has a part of the other, and more     |

  A query that contains several different stored images is a composite of them: each of
  those matches is reported as `composite` too (see `mark_composites`).
- `mirrored` and `rotated` (quarter turns or a small tilt) flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .model import Box

FULL = 0.85  # a frame counts as wholly shared when this much of it is covered


@dataclass(frozen=True)
class Similarity:
    """p_stored = scale * R(rotation) * F(mirrored) * p_query + (tx, ty), in pixels.

    F mirrors x (x -> -x) before the rotation; rotation is in degrees, counter-clockwise
    in the usual image coordinates (y down), as the transform is fitted.
    """

    scale: float
    rotation: float = 0.0
    mirrored: bool = False
    tx: float = 0.0
    ty: float = 0.0

    def matrix(self) -> np.ndarray:
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        m = np.array([[c, -s], [s, c]]) * self.scale
        if self.mirrored:
            m = m @ np.array([[-1.0, 0.0], [0.0, 1.0]])
        return m

    def apply(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return pts @ self.matrix().T + np.array([self.tx, self.ty])

    def inverse(self) -> Similarity:
        m_inv = np.linalg.inv(self.matrix())
        t = -m_inv @ np.array([self.tx, self.ty])
        # decompose m_inv back into scale, rotation, mirror
        det = np.linalg.det(m_inv)
        mirrored = det < 0
        a = m_inv @ np.array([[-1.0, 0.0], [0.0, 1.0]]) if mirrored else m_inv
        scale = math.sqrt(abs(np.linalg.det(a)))
        rotation = math.degrees(math.atan2(a[1, 0], a[0, 0]))
        return Similarity(scale, rotation, bool(mirrored), float(t[0]), float(t[1]))

    @property
    def quarter_turns(self) -> int:
        return round(self.rotation / 90.0) % 4

    @property
    def tilted(self) -> bool:
        """Rotated by more than a degree or two, other than by a whole number of quarter turns."""
        off = abs(self.rotation - 90.0 * round(self.rotation / 90.0))
        return off > 1.5


def from_boxes(query_box_px: Box, stored_box_px: Box, mirrored: bool = False) -> Similarity:
    """The map that carries one axis-aligned box onto another (scale from the mean of both axes)."""
    qx0, qy0, qx1, qy1 = query_box_px
    sx0, sy0, sx1, sy1 = stored_box_px
    sx = (sx1 - sx0) / max(qx1 - qx0, 1e-9)
    sy = (sy1 - sy0) / max(qy1 - qy0, 1e-9)
    scale = math.sqrt(max(sx * sy, 1e-18))
    if mirrored:  # query x0 edge lands on the stored x1 edge
        return Similarity(scale, 0.0, True, sx1 + scale * qx0, sy0 - scale * qy0)
    return Similarity(scale, 0.0, False, sx0 - scale * qx0, sy0 - scale * qy0)


def _frame(w: float, h: float) -> np.ndarray:
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)


def _polygon_area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_to_rect(poly: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex polygon (n, 2) inside [0, w] x [0, h]."""
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    for axis, limit, keep_below in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if len(poly) == 0:
            break
        out = []
        for i in range(len(poly)):
            a, b = poly[i - 1], poly[i]
            ina = a[axis] <= limit if keep_below else a[axis] >= limit
            inb = b[axis] <= limit if keep_below else b[axis] >= limit
            if ina != inb:
                out.append(a + (b - a) * (limit - a[axis]) / (b[axis] - a[axis]))
            if inb:
                out.append(b)
        poly = np.array(out, dtype=np.float64).reshape(-1, 2)
    return poly


def bbox_fraction(poly: np.ndarray, w: float, h: float) -> Box:
    if len(poly) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return (round(max(0.0, x0 / w), 4), round(max(0.0, y0 / h), 4),
            round(min(1.0, x1 / w), 4), round(min(1.0, y1 / h), 4))


def box_area(box: Box) -> float:
    """The area of a box (0 if it is empty or inverted), in its own units: fractions give shares."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes x0, y0, x1, y1 (fractions or pixels alike)."""
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / max(box_area(a) + box_area(b) - inter, 1e-9)


@dataclass(frozen=True)
class Explanation:
    relation: str
    query_box: Box
    target_box: Box
    query_covered: float  # share of the query's frame that lies in the stored image
    target_covered: float  # share of the stored image's frame that the query shows
    mirrored: bool
    rotated: bool


def explain(query_size: tuple[int, int], stored_size: tuple[int, int], sim: Similarity,
            identical: bool = False) -> Explanation:
    """Relation and shared boxes for a query of `query_size` mapped into a stored image by `sim`."""
    qw, qh = query_size
    sw, sh = stored_size
    in_stored = clip_to_rect(sim.apply(_frame(qw, qh)), sw, sh)
    in_query = clip_to_rect(sim.inverse().apply(_frame(sw, sh)), qw, qh)
    query_covered = _polygon_area(in_query) / (qw * qh)
    target_covered = _polygon_area(in_stored) / (sw * sh)
    if query_covered >= FULL and target_covered >= FULL:
        relation = "duplicate" if identical else "near_duplicate"
    elif query_covered >= FULL:
        relation = "crop"
    elif target_covered >= FULL:
        relation = "contains"
    else:
        relation = "composite"
    return Explanation(
        relation=relation,
        query_box=bbox_fraction(in_query, qw, qh),
        target_box=bbox_fraction(in_stored, sw, sh),
        query_covered=round(min(1.0, query_covered), 4),
        target_covered=round(min(1.0, target_covered), 4),
        mirrored=sim.mirrored,
        rotated=sim.quarter_turns != 0 or sim.tilted,
    )


def _disjoint(a: Box, b: Box, tolerance: float = 0.25) -> bool:
    """True when two boxes overlap by less than `tolerance` of the smaller one."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy <= tolerance * max(smaller, 1e-9)


def mark_composites(explanations: list[Explanation]) -> list[Explanation]:
    """A query showing two or more stored images in different places is a composite of them."""
    parts = [e for e in explanations if e.relation == "contains"]
    out = []
    for e in explanations:
        if e.relation == "contains" and any(o is not e and _disjoint(o.query_box, e.query_box) for o in parts):
            e = replace(e, relation="composite")
        out.append(e)
    return out


def score(distance_bits: int | None = None, inliers: int | None = None, exact: bool = False,
          agreeing_regions: int = 0) -> int:
    """0-100 confidence from the evidence. Exact bytes 100; hashes fall 2.5 points a bit; features
    rise with inliers. Each extra region that agrees with the same geometry adds a little."""
    if exact:
        return 100
    best = 0.0
    if distance_bits is not None:
        best = max(best, 98.0 - 2.5 * distance_bits)
    if inliers is not None:
        best = max(best, 50.0 + 45.0 * (1.0 - math.exp(-inliers / 40.0)))
    best += min(6.0, 2.0 * max(0, agreeing_regions - 1))
    return int(round(max(0.0, min(99.0, best))))
