"""Geometric verification of a candidate: do two images share content, and where?

``verify(query, stored)`` matches ORB descriptors (Hamming, ratio test), then fits by RANSAC a
similarity transform with or without a reflection (scale, rotation, translation, mirror:
everything crops, pastes, composites, flips and turns do; a homography would add four degrees
of freedom that only buy false fits). Hypotheses come from pairs of matches in closed form
(complex numbers: w = dz'/dz, or dz'/conj(dz) for a reflection), are scored all at once, and
the best is refined by least squares. A match is an inlier when it lands within a few pixels
and its keypoint's own angle and size agree with the model, so a flat icon's repeated corners
cannot pile up "inliers" on one spot; inliers are also counted on a grid (`distinct`), which is
what the acceptance threshold applies to.

The shared part is the overlap of the two frames under the fitted transform: the query's frame
mapped into the stored image and clipped to it (`stored_box`: for a crop, where the crop lies),
and the same polygon mapped back into the query (`query_box`: for a composite or a paste, the
cell where the stored picture was put). Boxes are fractions x0, y0, x1, y1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .explain import bbox_fraction, clip_to_rect
from .model import Box, Keypoints

MIN_INLIERS = 12  # distinct inliers to accept: see bench/keypoints.py (no false pair reached it)
RATIO = 0.85  # Lowe's ratio test on Hamming distances
MAX_DISTANCE = 80  # of 256 bits
HYPOTHESES = 600  # pairs of matches tried per model (with and without reflection)
TOLERANCE = 0.012  # inlier distance, as a fraction of the stored image's longer side
ANGLE_TOLERANCE = 25.0  # degrees between a keypoint's angle and the model's rotation
SCALE_TOLERANCE = 2.2  # factor between keypoint size ratio and the model's scale
GRID = 64  # distinct inliers: occupied cells of a GRID x GRID grid on each image
CURVE_SHARE = 0.8  # inliers on one line or circle: any disc matches any other disc, any edge any edge
# screened(): a first pass without every SCREEN_SKIP-th query keypoint (2: half of them) rejects
# a pair in which that sample fits nothing; only the other pairs are matched in full
SCREEN_SKIP = 2
SCREEN_MIN_KEYPOINTS = 400  # smaller queries are matched in full at once


@dataclass(frozen=True)
class Transform:
    """stored = scale * R(rotation) * F * query + (tx, ty), in pixels of the two Keypoints' working images.

    F flips x (query x -> -x) when mirrored. Rotation is in degrees, positive from +x towards +y
    (clockwise on screen, as image y points down).
    """

    scale: float
    rotation: float
    mirrored: bool
    tx: float
    ty: float

    def apply(self, xy: np.ndarray) -> np.ndarray:
        z = _as_complex(np.asarray(xy, dtype=np.float64))
        if self.mirrored:
            z = -np.conj(z)
        out = self.scale * np.exp(1j * np.deg2rad(self.rotation)) * z + complex(self.tx, self.ty)
        return np.stack([out.real, out.imag], axis=-1)

    def invert(self, xy: np.ndarray) -> np.ndarray:
        z = _as_complex(np.asarray(xy, dtype=np.float64)) - complex(self.tx, self.ty)
        z = z / (self.scale * np.exp(1j * np.deg2rad(self.rotation)))
        if self.mirrored:
            z = -np.conj(z)
        return np.stack([z.real, z.imag], axis=-1)


@dataclass(frozen=True)
class Verification:
    inliers: int  # matches consistent with the transform
    distinct: int  # inliers counted once per grid cell, on the sparser of the two images
    matches: int  # tentative matches after the ratio test
    transform: Transform  # query working pixels -> stored working pixels
    query_box: Box  # the shared part, in the query
    stored_box: Box  # the shared part, in the stored image (for a crop: where the query lies)
    confidence: float  # 0..1, 0.5 at MIN_INLIERS distinct inliers
    pairs: np.ndarray = field(default=None, repr=False, compare=False)  # (inliers, 2): query, stored keypoint index

    @property
    def accepted(self) -> bool:
        return self.distinct >= MIN_INLIERS


def screened(query: Keypoints, stored: Keypoints, min_inliers: int = MIN_INLIERS) -> Verification | None:
    """:func:`verify`, after a cheaper first look that rejects most unrelated pairs.

    A sample of the query's keypoints (all but every SCREEN_SKIP-th) is matched first; the ratio
    test is per query keypoint, so its matches are a subset of the full pass's. If the sample fits
    nothing (verify() asking for one distinct inlier: no 3 matches on one similarity, off one
    curve), the pair is rejected; else it is verified in full, with the same result as
    :func:`verify`. Matching is most of a verification's cost (1000 x 500 descriptors), and most
    candidates are unrelated. On the kit's two corpora (bench/screening.py: 2,374 and 2,418 pairs)
    the half sample rejected all but 3 per corpus of the pairs the full pass rejects, in half the time,
    and kept 167 of the 168 it accepts, but also rejected 10 of the 35 near fits (5-11 distinct
    inliers) that guided verification may still accept: search screens only the candidates ranked
    after its first few.
    """
    if len(query) >= SCREEN_MIN_KEYPOINTS and SCREEN_SKIP > 1:
        if verify(screening_sample(query), stored, min_inliers=1) is None:
            return None
    return verify(query, stored, min_inliers=min_inliers)


def screening_sample(query: Keypoints, skip: int | None = None) -> Keypoints:
    """The keypoints :func:`screened` matches first: all but every ``skip``-th (default SCREEN_SKIP)."""
    skip = SCREEN_SKIP if skip is None else skip
    return query.take(np.arange(len(query)) % skip != 0)


def _as_complex(xy: np.ndarray) -> np.ndarray:
    return xy[..., 0] + 1j * xy[..., 1]


def match(query: Keypoints, stored: Keypoints) -> np.ndarray:
    """(m, 2) index pairs (query, stored): ratio-test nearest neighbours, one per stored keypoint."""
    if len(query) < 2 or len(stored) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    # the two nearest stored descriptors of each query descriptor, as arrays (what BFMatcher's
    # knnMatch computes, without a DMatch object per match)
    dist, nearest = cv2.batchDistance(np.asarray(query.descriptors), np.asarray(stored.descriptors), cv2.CV_32S,
                                      normType=cv2.NORM_HAMMING, K=2)
    d0, d1 = dist[:, 0].astype(np.float64), dist[:, 1].astype(np.float64)
    keep = (nearest[:, 1] >= 0) & (d0 <= MAX_DISTANCE) & (d0 < RATIO * d1)
    if not keep.any():
        return np.zeros((0, 2), dtype=np.int64)
    qi, si, d = np.flatnonzero(keep), nearest[keep, 0].astype(np.int64), d0[keep]
    order = np.argsort(d, kind="stable")
    _, first = np.unique(si[order], return_index=True)  # the closest query keypoint per stored keypoint
    chosen = order[np.sort(first)]  # in order of distance, as the RANSAC sampling expects
    return np.stack([qi[chosen], si[chosen]], axis=1)


@dataclass(frozen=True)
class _Side:
    """The tentative matches' geometry for hypotheses with or without a reflection: query positions
    (conjugated under a reflection), stored positions, the cosine and sine of each match's angle
    difference (stored minus query, the query's angle negated under a reflection) and the log of
    its size ratio (stored / query). Computed once per verification, not per hypothesis."""

    zq: np.ndarray
    zs: np.ndarray
    cos_turn: np.ndarray
    sin_turn: np.ndarray
    log_ratio: np.ndarray

    @classmethod
    def of(cls, geo: dict, reflect: bool) -> _Side:
        turn = np.deg2rad(geo["as"] + geo["aq"] if reflect else geo["as"] - geo["aq"])
        return cls(np.conj(geo["zq"]) if reflect else geo["zq"], geo["zs"], np.cos(turn), np.sin(turn),
                   np.log(geo["ratio"]))


_COS_ANGLE_TOLERANCE = float(np.cos(np.deg2rad(ANGLE_TOLERANCE)))
_LOG_SCALE_TOLERANCE = float(np.log(SCALE_TOLERANCE))


def _score(w: np.ndarray, t: np.ndarray, side: _Side, tolerance: float) -> np.ndarray:
    """Boolean (h, m): match j is an inlier of hypothesis (w[i], t[i]) by position, angle and size.

    Position: |w zq + t - zs| < tolerance (compared squared). Angle: the match's angle difference
    within ANGLE_TOLERANCE of the hypothesis' rotation arg(w), i.e. the cosine of their difference
    above cos(ANGLE_TOLERANCE). Size: |log(ratio) - log|w|| < log(SCALE_TOLERANCE).
    """
    diff = w[:, None] * side.zq[None, :] + (t[:, None] - side.zs[None, :])
    near = diff.real ** 2 + diff.imag ** 2 < tolerance * tolerance
    size = np.abs(w)
    unit = w / size  # cos and sin of the hypothesis' rotation
    turned = side.cos_turn[None, :] * unit.real[:, None] + side.sin_turn[None, :] * unit.imag[:, None]
    scaled = np.abs(side.log_ratio[None, :] - np.log(size)[:, None]) < _LOG_SCALE_TOLERANCE
    return near & (turned > _COS_ANGLE_TOLERANCE) & scaled


def _fit(zq: np.ndarray, zs: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity zs ~ w * zq + t."""
    mq, ms = zq.mean(), zs.mean()
    dq = zq - mq
    w = np.sum((zs - ms) * np.conj(dq)) / max(np.sum(np.abs(dq) ** 2), 1e-9)
    return w, ms - w * mq


def _distinct(xy: np.ndarray, size: tuple[int, int]) -> int:
    cells = np.floor(xy / (max(size) / GRID)).astype(np.int64)
    return len(np.unique(cells[:, 0] * (GRID + 1) + cells[:, 1]))


def _on_one_curve(xy: np.ndarray, size: tuple[int, int]) -> float:
    """Share of the points within a thin band around their best-fitting line or circle.

    The edge of a disc on a dark sky (a planet, a ball, a coin) matches the edge of any other disc
    under many similarities; a straight edge under a whole family of them. Such inliers say
    nothing about the content.
    """
    if len(xy) < 4:
        return 1.0
    band = 0.01 * max(size)
    centred = xy - xy.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    line = np.abs(centred @ vt[1]) < band
    a = np.column_stack([xy, np.ones(len(xy))])  # x^2 + y^2 = 2 cx x + 2 cy y + c
    solution, *_ = np.linalg.lstsq(a, (xy**2).sum(axis=1), rcond=None)
    centre = solution[:2] / 2
    radius = np.sqrt(max(solution[2] + centre @ centre, 0.0))
    circle = np.abs(np.linalg.norm(xy - centre, axis=1) - radius) < band
    return float(max(line.mean(), circle.mean()))


def shared_boxes(transform: Transform, query_size: tuple[int, int], stored_size: tuple[int, int]) -> tuple[Box, Box]:
    """(query_box, stored_box): the overlap of the two frames, in each image."""
    qw, qh = query_size
    frame = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], dtype=np.float64)
    overlap = clip_to_rect(transform.apply(frame), *stored_size)
    if len(overlap) < 3:
        return (0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)
    return bbox_fraction(transform.invert(overlap), *query_size), bbox_fraction(overlap, *stored_size)


def verify(query: Keypoints, stored: Keypoints, min_inliers: int = MIN_INLIERS, seed: int = 0) -> Verification | None:
    """The best similarity (with or without mirror) mapping query onto stored, or None below `min_inliers`.

    Deterministic for a given seed. For a mirrored query pass the keypoints of
    ``extract(image, mirror=True)``: their matches fit a reflection and come out mirrored=True.
    """
    pairs = match(query, stored)
    if len(pairs) < 3:
        return None
    qi, si = pairs[:, 0], pairs[:, 1]
    geo = {"zq": _as_complex(np.asarray(query.xy, np.float64)[qi]),
           "zs": _as_complex(np.asarray(stored.xy, np.float64)[si]),
           "aq": np.asarray(query.angle, np.float64)[qi], "as": np.asarray(stored.angle, np.float64)[si],
           "ratio": np.asarray(stored.scale, np.float64)[si] / np.asarray(query.scale, np.float64)[qi]}
    tolerance = TOLERANCE * max(stored.size)
    rng = np.random.default_rng(seed)
    m = len(pairs)
    if m * (m - 1) // 2 <= HYPOTHESES:
        a, b = np.triu_indices(m, 1)
    else:
        a, b = rng.integers(0, m, HYPOTHESES), rng.integers(0, m, HYPOTHESES)
    best: tuple[int, bool, complex, complex] | None = None
    sides = {reflect: _Side.of(geo, reflect) for reflect in (False, True)}
    for reflect, side in sides.items():
        zq = side.zq
        dq, ds = zq[b] - zq[a], side.zs[b] - side.zs[a]
        ok = (np.abs(dq) > 4) & (np.abs(ds) > 4)
        if not ok.any():
            continue
        w = ds[ok] / dq[ok]
        t = side.zs[a[ok]] - w * zq[a[ok]]
        sane = (np.abs(w) > 1 / 16) & (np.abs(w) < 16)
        if not sane.any():
            continue
        counts = _score(w[sane], t[sane], side, tolerance).sum(axis=1)
        i = int(np.argmax(counts))
        if best is None or counts[i] > best[0]:
            best = (int(counts[i]), reflect, w[sane][i], t[sane][i])
    if best is None or best[0] < 3:
        return None
    _, reflect, w, t = best
    side = sides[reflect]
    inliers = _score(np.array([w]), np.array([t]), side, tolerance)[0]
    for _ in range(2):  # refine on the inliers
        w, t = _fit(side.zq[inliers], side.zs[inliers])
        if not 1 / 16 < abs(w) < 16:
            return None
        refined = _score(np.array([w]), np.array([t]), side, tolerance)[0]
        if refined.sum() < 3:
            break
        inliers = refined
    qxy = np.asarray(query.xy)[qi[inliers]]
    sxy = np.asarray(stored.xy)[si[inliers]]
    distinct = min(_distinct(qxy, query.size), _distinct(sxy, stored.size))
    if distinct < min_inliers or _on_one_curve(sxy, stored.size) >= CURVE_SHARE:
        return None
    # reflect: zs = w * conj(zq) + t = (-w) * (-conj(zq)) + t, and -conj flips x
    rot_w = -w if reflect else w
    transform = Transform(scale=float(abs(w)), rotation=float(np.angle(rot_w, deg=True)), mirrored=reflect,
                          tx=float(t.real), ty=float(t.imag))
    query_box, stored_box = shared_boxes(transform, query.size, stored.size)
    return Verification(inliers=int(inliers.sum()), distinct=distinct, matches=m, transform=transform,
                        query_box=query_box, stored_box=stored_box,
                        confidence=round(1.0 - 0.5 ** (distinct / MIN_INLIERS), 3), pairs=pairs[inliers])
