"""Icon shapes: hashes of an object cut out of its background, whatever that background is.

An icon stored with transparency is flattened onto white for its global hashes; the same icon
flattened onto another colour (and recoloured, resized) has a different global pHash. Both sides
therefore hash what does not depend on the background:

- ``shape``: the pHash of the silhouette, an 'L' image, white = opaque. Stored side: the alpha
  mask. Without alpha (a query, or a stored object photographed on a plain background): when at
  least ``UNIFORM_BORDER`` of the border pixels share one colour, the pixels farther than
  ``BACKGROUND_DISTANCE`` from it, median-filtered.
- ``cutout``: the pHash of the object's grey pixels on a background of their own mean grey, so
  that the background adds no edge; it keeps thin or hollow icons whose silhouettes say little
  and tells apart icons of the same outline. It is built from the object's *ink*, its grey times
  its weight in each pixel: without alpha, the pixels inside the 0/1 mask; with alpha, the
  pixels less the white they were flattened onto (engine.loading) times 1 - alpha, so that
  semi-transparent parts (a glow, a shadow) keep their own grey, not a mix with white that no
  other background shows. An object of one grey has a flat cut-out, whose pHash is rounding
  noise shared by every such icon (0x0 for most): one with less texture than
  ``MIN_CUTOUT_TEXTURE`` is left out.

Silhouettes such as a full square, a rounded square or a disc are shared by many icons: a stored
mask whose pHash is within ``GENERIC_BITS`` of a rectangle, rounded rectangle or ellipse filling
its bounding box gives no ``shape`` region (its ``cutout`` is kept). A query keeps its silhouette
whatever it looks like: it can only meet stored silhouettes, none of them generic, and the test
depends on the bounding box, which the two sides find differently (a soft glow or shadow under
half opacity lies outside the stored box but inside the query's when it stands out from the new
background), so testing the query too only lost true matches.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from .. import hashes
from ..loading import BACKGROUND
from ..model import Box, Hash, Region

WORK_SIDE = 512
UNIFORM_BORDER = 0.6  # share of border pixels within BORDER_TOLERANCE of the median border colour
BORDER_TOLERANCE = 12
PRECHECK_SLACK = 0.2  # the full-size border may be this much less uniform than the resized one
BACKGROUND_DISTANCE = 24  # a foreground pixel differs from the background by more (max over RGB)
MIN_FOREGROUND, MAX_FOREGROUND = 0.01, 0.95  # share of the image the object covers
GENERIC_BITS = 8
MIN_CUTOUT_TEXTURE = 1.0  # grey levels (standard deviation) of the cut-out in pHash's 32x32 copy
FLATTENED_ONTO = float(np.dot(BACKGROUND, (0.299, 0.587, 0.114)))  # the grey under transparency, as convert('L')

PHash = Callable[[Image.Image], Hash]


def shape_regions(image: Image.Image, alpha_mask: Image.Image | None = None,
                  phash: PHash = hashes.phash, *, query: bool = False) -> list[Region]:
    """'shape' and 'cutout' regions of an object on a transparent or plain background; [] otherwise.
    ``query``: a query's, which keeps a generic silhouette."""
    found = _foreground(image, alpha_mask)
    if found is None:
        return []
    weight, ink = found
    mask = weight >= 0.5
    box = _bbox(mask)
    regions = []
    silhouette = phash(_grey_image(weight * 255))
    if query or not _generic(mask, box, silhouette, phash):
        regions.append(Region("shape", _fractions(box, mask.shape), silhouette))
    cutout = _cutout(weight, ink)
    if cutout is not None:
        regions.append(Region("cutout", _fractions(box, mask.shape), phash(cutout)))
    return regions


def shape_hash(image: Image.Image, alpha_mask: Image.Image | None = None, phash: PHash = hashes.phash) -> Hash | None:
    """The silhouette's pHash, or None when there is no object on a plain background or its shape is generic."""
    return next((r.hash for r in shape_regions(image, alpha_mask, phash) if r.kind == "shape"), None)


def foreground_mask(image: Image.Image, alpha_mask: Image.Image | None = None) -> np.ndarray | None:
    """The object as a float array in [0, 1] (1 = object), at most WORK_SIDE px; None if there is none."""
    found = _foreground(image, alpha_mask)
    return None if found is None else found[0]


# --- internals ----------------------------------------------------------------------------------


def _foreground(image: Image.Image, alpha_mask: Image.Image | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(object weight in [0, 1], the object's grey times its weight), both float arrays at most
    WORK_SIDE px; None if no object."""
    scale = min(1.0, WORK_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if alpha_mask is None and _uniform_share(_edge_pixels(rgb)) < UNIFORM_BORDER - PRECHECK_SLACK:
        return None  # a photo: its border is far from one colour even before resizing (cheap exit)
    if scale < 1:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    if alpha_mask is not None:
        alpha = alpha_mask if scale == 1 else alpha_mask.resize(size, Image.Resampling.BILINEAR)
        weight = np.asarray(alpha, dtype=np.float64) / 255
    else:
        weight = _mask_from_background(np.asarray(rgb))
        if weight is None:
            return None
    share = (weight >= 0.5).mean()
    if not MIN_FOREGROUND <= share <= MAX_FOREGROUND:
        return None
    grey = np.asarray(rgb.convert("L"), dtype=np.float64)  # only made when there is an object
    if alpha_mask is not None:  # grey = ink + FLATTENED_ONTO * (1 - alpha)
        return weight, grey - FLATTENED_ONTO * (1 - weight)
    return weight, grey * weight


def _edge_pixels(rgb: Image.Image) -> np.ndarray:
    """The outermost rows and columns of an RGB image, as (n, 3) int16, without converting the rest."""
    w, h = rgb.size
    strips = [rgb.crop(box) for box in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    return np.concatenate([np.asarray(strip).reshape(-1, 3) for strip in strips]).astype(np.int16)


def _uniform_share(border: np.ndarray) -> float:
    """Share of the border pixels within BORDER_TOLERANCE of their median colour."""
    colour = np.median(border, axis=0)
    return float((np.abs(border - colour).max(axis=1) <= BORDER_TOLERANCE).mean())


def _mask_from_background(a: np.ndarray) -> np.ndarray | None:
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).astype(np.int16)
    colour = np.median(border, axis=0)
    if _uniform_share(border) < UNIFORM_BORDER:
        return None
    # background: every channel within BACKGROUND_DISTANCE of the colour (a half-integer median
    # too), i.e. between these integer bounds; the rest is far from it (255)
    low = np.clip(np.ceil(colour - BACKGROUND_DISTANCE), 0, 255)
    high = np.clip(np.floor(colour + BACKGROUND_DISTANCE), 0, 255)
    far = cv2.bitwise_not(cv2.inRange(a, low, high))
    return cv2.medianBlur(far, 3).astype(np.float64) / 255


def _cutout(weight: np.ndarray, ink: np.ndarray) -> Image.Image | None:
    """The object on its own mean grey (the ink plus the mean times 1 - weight); None when that is
    flat to pHash (one grey: its hash would be rounding noise)."""
    mean = float(ink.sum() / weight.sum())
    cutout = _grey_image(ink + mean * (1 - weight))
    seen = np.asarray(cutout.resize((hashes.PHASH_SIDE, hashes.PHASH_SIDE), hashes.LANCZOS), dtype=np.float64)
    return cutout if seen.std() >= MIN_CUTOUT_TEXTURE else None


def _grey_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + w, y + h


def _fractions(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> Box:
    h, w = shape[:2]
    return box[0] / w, box[1] / h, box[2] / w, box[3] / h


def _generic(mask: np.ndarray, box: tuple[int, int, int, int], silhouette: Hash, phash: PHash) -> bool:
    """Whether the silhouette hashes like a plain rectangle, rounded rectangle or ellipse in its box."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r = int(0.2 * min(w, h))
    rect, rounded, ellipse = (np.zeros(mask.shape, np.uint8) for _ in range(3))
    rect[y0:y1, x0:x1] = 255
    cv2.rectangle(rounded, (x0 + r, y0), (x1 - 1 - r, y1 - 1), 255, -1)
    cv2.rectangle(rounded, (x0, y0 + r), (x1 - 1, y1 - 1 - r), 255, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - 1 - r, y0 + r), (x0 + r, y1 - 1 - r), (x1 - 1 - r, y1 - 1 - r)):
        cv2.circle(rounded, (cx, cy), r, 255, -1)
    cv2.ellipse(ellipse, ((x0 + x1) // 2, (y0 + y1) // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    return any(phash(Image.fromarray(m)) - silhouette <= GENERIC_BITS for m in (rect, rounded, ellipse))
