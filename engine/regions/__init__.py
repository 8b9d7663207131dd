"""Content-aligned regions: parts of an image hashed on their own, found the same way in a stored
image and in a query, so that a crop or a composite still shares region hashes with its source.

Kinds (each a pHash of 64 bits, see the modules for how they are found):

- ``face``: squares around frontal faces (engine.regions.faces);
- ``picture``: pictures inside the picture: the parts of a collage, the photo inside a frame or
  above a caption bar, a photo pasted onto another (engine.regions.pictures). When caption bars
  are found, one more ``picture`` region covers the whole image with the bars painted over;
- ``shape`` / ``cutout``: an object on a transparent or plain background, as its silhouette and
  as its grey pixels on their own mean (engine.regions.shapes). These two only compare with their
  own kind; faces and pictures compare with each other and with global pHashes.

Regions with too little texture (the grey standard deviation of the box in a small copy of the
image below ``MIN_TEXTURE``) are dropped: flat areas hash alike and match unrelated images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
from PIL import Image

from .. import hashes, threads
from ..model import Box, Hash, Region
from . import pictures as _pictures
from .faces import face_boxes
from .pictures import cover_bars, find_pictures, picture_boxes
from .shapes import shape_hash, shape_regions

__all__ = ["find_regions", "start_faces", "face_boxes", "picture_boxes", "shape_hash", "texture", "texture_image",
           "MIN_TEXTURE"]

MIN_TEXTURE = 8.0  # grey levels (standard deviation) in the TEXTURE_SIDE copy
TEXTURE_SIDE = 256
TEXTURE_INSET = 0.1
FULL: Box = (0.0, 0.0, 1.0, 1.0)


def find_regions(image: Image.Image, alpha_mask: Image.Image | None = None,
                 phash: Callable[[Image.Image], Hash] = hashes.phash, *,
                 min_texture: float | None = None, timings: dict[str, float] | None = None,
                 faces: Future | None = None, grey: Image.Image | None = None,
                 query: bool = False) -> list[Region]:
    """All regions of ``image`` (RGB; ``alpha_mask`` 'L' if it had transparency), faces first.

    Regions whose :func:`texture` is below ``min_texture`` (default MIN_TEXTURE) are left out.
    ``timings``, if given, receives seconds per stage ('faces', 'pictures', 'shapes', 'hashing').
    ``faces``: the face boxes being found elsewhere (:func:`start_faces`: a query finds them in a
    thread while it does the rest); found here otherwise. ``grey``: the image's
    :func:`engine.hashes.grey` copy, if already made. ``query``: the regions of a query, not of an
    image to store (a query keeps a generic icon silhouette: engine.regions.shapes).
    """
    min_texture = MIN_TEXTURE if min_texture is None else min_texture
    clock = _Clock(timings)
    grey = hashes.grey(image) if grey is None else grey  # one grey copy for faces, textures and hashing
    if faces is None:
        face_list = face_boxes(image, grey)
        clock.lap("faces")
    pictures, uncovered = find_pictures(image)
    clock.lap("pictures")
    shapes = shape_regions(image, alpha_mask, phash, query=query)
    clock.lap("shapes")
    if faces is not None:
        face_list = faces.result()
        clock.lap("faces")  # what was left to wait for

    small = texture_image(image, grey)
    regions: list[Region] = []
    for kind, boxes in (("face", face_list), ("picture", pictures)):
        for box in boxes:
            if texture(small, box) >= min_texture:
                regions.append(Region(kind, box, phash(grey.crop(hashes.box_pixels(box, grey.size)))))
    if uncovered is not None and texture(small, FULL) >= min_texture:
        for fill in _pictures.BAR_FILLS:
            regions.append(Region("picture", FULL, phash(cover_bars(image, uncovered, fill))))
    regions.extend(shapes)
    clock.lap("hashing")
    return regions


def start_faces(image: Image.Image, grey: Image.Image | None = None) -> Future:
    """The face boxes of ``image`` (``grey``: its :func:`engine.hashes.grey` copy, if made), found in
    a pool thread (engine.threads) for :func:`find_regions`: the Haar detector is a query's largest
    cost, and releases the GIL."""
    return threads.start(lambda: face_boxes(image, hashes.grey(image) if grey is None else grey))


def texture(small_grey: np.ndarray, box: Box, inset: float | None = None) -> float:
    """Grey standard deviation inside ``box``, less ``inset`` of its size on each side, in a small
    grey copy of the image (:func:`texture_image`). The inset ignores the box's own edges: a flat
    patch bounded by strong edges is still flat inside."""
    inset = TEXTURE_INSET if inset is None else inset
    h, w = small_grey.shape
    dx, dy = inset * (box[2] - box[0]), inset * (box[3] - box[1])
    x0 = min(int((box[0] + dx) * w), w - 1)
    y0 = min(int((box[1] + dy) * h), h - 1)
    x1 = max(x0 + 1, round((box[2] - dx) * w))
    y1 = max(y0 + 1, round((box[3] - dy) * h))
    return float(small_grey[y0:y1, x0:x1].std())


def texture_image(image: Image.Image, grey: Image.Image | None = None) -> np.ndarray:
    """The grey copy (longer side TEXTURE_SIDE) that :func:`texture` measures (``grey``: the
    image's :func:`engine.hashes.grey` copy, if already made)."""
    g = hashes.grey(image) if grey is None else grey
    scale = min(1.0, TEXTURE_SIDE / max(g.size))
    if scale < 1:
        g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.float32)


class _Clock:
    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
        self.t = now
