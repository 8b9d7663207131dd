"""Face squares: regions centred on frontal faces, found the same way in a stored image and a query.

A face crop of a stored photo shares no global hash with it, but if both sides cut the same
square around the same face, the two squares hash alike. That needs the face box to land on the
same content on both sides (a pHash only matches when the regions overlap with IoU >= ~0.9), so:

1. propose candidates with OpenCV's Haar frontal-face cascade on a small grey copy (the shorter
   side scaled to ``DETECT_SHORT_SIDE``, coarse ``scaleFactor``), keeping every raw hit of the
   cascade (no neighbour vote) and clustering overlapping hits into one candidate each, most hits
   first. The cascade's cost grows with the windows it scans (see :func:`_coarse`): ~24 ms in
   all for a pool photo on one core, the refinement included. A neighbour vote on so small a copy
   loses faces that a few raw hits still propose;
2. re-detect each candidate in a window around it, rescaled so the face is ``REFINE_FACE_PX``
   wide, with a fine ``scaleFactor`` and a narrow size range, ``REFINE_PASSES`` times, each pass
   centred on the last. The face is then seen at the same scale whatever the size of the image it
   came from, and the second pass no longer depends on where the candidate was (a coarse
   candidate on a small copy is off by a few pixels): that makes its box consistent between a
   photo and a crop of it. A face that is not found again is dropped;
3. cut squares of ``SCALES`` times the face box around its centre, clipped to the image.

Small squares (1.2x, 1.5x) fit inside most crops of a face, so the query hashes its own squares
and compares them with the stored ones. Measured on the benchmark corpus (bench/regions.py).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from PIL import Image

from ..explain import box_iou
from ..model import Box

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SHORT_SIDE = 288  # the coarse copy's shorter side (longer side at most twice that)
MIN_FACE_PX = 24  # the cascade's window: faces below 1/12 of the shorter side are not proposed
COARSE_SCALE_FACTOR = 1.2
CLUSTER_IOU = 0.3  # raw coarse hits overlapping this much are one candidate
REFINE_FACE_PX = 64  # the face's width when it is detected again
REFINE_WINDOW = 1.5  # the window around the face, in face widths
REFINE_SCALE_FACTOR = 1.05
REFINE_MIN_NEIGHBORS = 5
REFINE_PASSES = 2
CHECK_SCALE_FACTOR = 1.1  # the first pass, which also rejects candidates that are not faces
CHECK_MIN_NEIGHBORS = 5
MAX_CANDIDATES = 12  # coarse detections that are refined
MAX_FACES = 8  # faces kept, largest first
SAME_FACE_SIZE = 1.5  # two boxes of one face differ in width by less than this factor
SCALES = (1.2, 1.5)  # square sides in face-box widths

FaceRect = tuple[float, float, float, float]  # x, y, width, height in pixels of the image


_local = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    """The cascade, loaded once per thread (a few ms): a CascadeClassifier is not thread-safe,
    and two threads detecting with one (the HTTP server's) fail an OpenCV assertion."""
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if cascade.empty():
            raise RuntimeError(f"cannot load the OpenCV cascade {CASCADE}")
        _local.cascade = cascade
    return cascade


def detect_faces(image: Image.Image, grey: Image.Image | None = None) -> list[FaceRect]:
    """Frontal faces, largest first, at most ``MAX_FACES``, in pixels of ``image`` (``grey``: its
    'L' copy, if already made)."""
    grey = np.asarray(image.convert("L") if grey is None else grey)
    coarse = _coarse(grey)[:MAX_CANDIDATES]
    refined = [face for face in (_refine_passes(grey, face) for face in coarse) if face is not None]
    refined.sort(key=lambda f: -f[2])
    kept: list[FaceRect] = []
    for face in refined:  # two coarse boxes can refine to the same face
        if all(not _same_face(face, other) for other in kept):
            kept.append(face)
    return kept[:MAX_FACES]


def face_squares(size: tuple[int, int], faces: list[FaceRect], scales: tuple[float, ...] | None = None) -> list[Box]:
    """Squares of ``scales`` (default SCALES) face widths around each face centre, clipped to the
    image, as fractions."""
    width, height = size
    scales = SCALES if scales is None else scales
    boxes: list[Box] = []
    for x, y, w, h in faces:
        cx, cy = x + w / 2, y + h / 2
        for scale in scales:
            r = w * scale / 2
            x0, y0 = max(0, round(cx - r)), max(0, round(cy - r))
            x1, y1 = min(width, round(cx + r)), min(height, round(cy + r))
            if x1 - x0 >= 8 and y1 - y0 >= 8:
                boxes.append((x0 / width, y0 / height, x1 / width, y1 / height))
    return boxes


def face_boxes(image: Image.Image, grey: Image.Image | None = None) -> list[Box]:
    """The face squares of ``image``: ``len(SCALES)`` boxes per face, largest face first."""
    return face_squares(image.size, detect_faces(image, grey))


# --- internals ----------------------------------------------------------------------------------


def _coarse(grey: np.ndarray) -> list[FaceRect]:
    """Face candidates, best first: the cascade's raw hits on a small copy, clustered.

    When the image is larger than that copy, faces up to twice the cascade's window are looked for
    on the copy, larger ones on a copy of half its size: OpenCV steps 1 px on its levels of scale
    >= 2 and 2 px below, so at half size the large faces cost a quarter, and are still proposed.
    A smaller image (a face crop, say) is scanned whole, at every size."""
    h, w = grey.shape
    s = min(1.0, DETECT_SHORT_SIDE / min(w, h), 2 * DETECT_SHORT_SIDE / max(w, h))
    passes = [(s, MIN_FACE_PX, 2 * MIN_FACE_PX - 1), (s / 2, MIN_FACE_PX, 0)] if s < 1 else [(1.0, MIN_FACE_PX, 0)]
    hits: list[FaceRect] = []
    for zoom, least, most in passes:
        small = grey
        if zoom < 1:
            small = cv2.resize(grey, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
        found = _cascade().detectMultiScale(small, scaleFactor=COARSE_SCALE_FACTOR, minNeighbors=0,
                                            minSize=(least, least), maxSize=(most, most))
        hits += [(x / zoom, y / zoom, fw / zoom, fh / zoom) for x, y, fw, fh in (found if len(found) else [])]
    return _cluster(hits)


def _cluster(hits: list[FaceRect]) -> list[FaceRect]:
    """One candidate (the median box) per group of overlapping hits, the groups with most hits first.
    The hits are sorted first: OpenCV returns them in the order its threads finish."""
    groups: list[list[FaceRect]] = []
    for hit in sorted(hits):
        for group in groups:
            if box_iou(_corners(hit), _corners(group[0])) >= CLUSTER_IOU:
                group.append(hit)
                break
        else:
            groups.append([hit])
    groups.sort(key=lambda g: (-len(g), -g[0][2]))
    return [tuple(float(v) for v in np.median(np.array(g), axis=0)) for g in groups]


def _refine_passes(grey: np.ndarray, face: FaceRect) -> FaceRect | None:
    """:func:`_refine` REFINE_PASSES times, each centred on the last; None if the first finds nothing."""
    refined = _refine(grey, face, CHECK_SCALE_FACTOR, CHECK_MIN_NEIGHBORS)
    for _ in range(REFINE_PASSES - 1):
        if refined is None:
            break
        again = _refine(grey, refined)
        if again is None:
            break
        refined = again
    return refined


def _refine(grey: np.ndarray, face: FaceRect, scale_factor: float | None = None,
            min_neighbors: int | None = None) -> FaceRect | None:
    """The face detected again in a window around it, rescaled so that it is REFINE_FACE_PX wide."""
    scale_factor = REFINE_SCALE_FACTOR if scale_factor is None else scale_factor
    min_neighbors = REFINE_MIN_NEIGHBORS if min_neighbors is None else min_neighbors
    x, y, fw, fh = face
    height, width = grey.shape
    cx, cy, r = x + fw / 2, y + fh / 2, fw * REFINE_WINDOW / 2
    x0, y0 = int(max(0, cx - r)), int(max(0, cy - r))
    x1, y1 = int(min(width, cx + r)), int(min(height, cy + r))
    s = REFINE_FACE_PX / fw
    size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
    window = cv2.resize(grey[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    lo, hi = int(REFINE_FACE_PX * 0.75), int(REFINE_FACE_PX * 1.33)
    found = _cascade().detectMultiScale(window, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                        minSize=(lo, lo), maxSize=(hi, hi))
    if len(found) == 0:
        return None
    wx, wy = (cx - x0) * s, (cy - y0) * s
    bx, by, bw, bh = min(found, key=lambda b: abs(b[0] + b[2] / 2 - wx) + abs(b[1] + b[3] / 2 - wy))
    return x0 + bx / s, y0 + by / s, bw / s, bh / s


def _same_face(a: FaceRect, b: FaceRect) -> bool:
    """Centres closer than half a face width, and sizes within SAME_FACE_SIZE of each other (a large
    false 'face' around a small real one is not the same face)."""
    if max(a[2], b[2]) > SAME_FACE_SIZE * min(a[2], b[2]):
        return False
    return abs(a[0] + a[2] / 2 - b[0] - b[2] / 2) < 0.5 * b[2] and abs(a[1] + a[3] / 2 - b[1] - b[3] / 2) < 0.5 * b[3]


def _corners(face: FaceRect) -> Box:
    x, y, w, h = face
    return x, y, x + w, y + h
