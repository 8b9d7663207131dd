"""Perceptual hashes: aHash, dHash and pHash, the 8 rotations/flips, and pHashes of regions.

The three global hashes are bit-for-bit those of ImageHash 4.3.2 (``average_hash``, ``dhash``,
``phash`` with hash_size 8) for the same PIL image: greyscale with ``convert('L')``, a LANCZOS
resize to 8x8 / 9x8 / 32x32, then the mean, row-wise differences, or the median of the 8x8
low-frequency corner of scipy.fftpack's 2-D DCT-II. Bits are imagehash's flattened array,
first element = most significant bit.

The dihedral group: names, Pillow operations and meaning (angles counter-clockwise, as Pillow's
``Image.Transpose.ROTATE_90`` and ``np.rot90``; mirror = left-right flip, applied first):

    identity        -                  unchanged
    rot90           ROTATE_90          turned 90 degrees counter-clockwise
    rot180          ROTATE_180         turned upside down
    rot270          ROTATE_270         turned 90 degrees clockwise
    mirror          FLIP_LEFT_RIGHT    mirrored left-right
    mirror_rot90    TRANSPOSE          mirrored, then rot90 = reflected in the main diagonal
    mirror_rot180   FLIP_TOP_BOTTOM    mirrored, then rot180 = flipped top-bottom
    mirror_rot270   TRANSVERSE         mirrored, then rot270 = reflected in the anti-diagonal

If a query is ``T(original)``, then ``phash(query) == phash_dihedral(original)[T]``.

Speed: a LANCZOS resize commutes exactly with left-right and top-bottom flips (Pillow computes
mirrored, identical fixed-point weights), so the 32x32 grey array of a flipped image is the
flipped array. It does *not* commute with a transposition: Pillow resizes horizontally first and
rounds to 8 bits in between, so swapping the axes changes pixels by up to ~9 levels and pHash
bits with them. ``phash_dihedral`` therefore resizes twice (the image and its transpose, about
1.3 + 1.6 ms for a 1024x683 photo) and gets all 8 arrays by flipping those two, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fftpack
from PIL import Image

from .model import Box, Hash

HASH_SIZE = 8
PHASH_SIDE = 32  # hash_size * highfreq_factor (4), as in imagehash
LANCZOS = Image.Resampling.LANCZOS

_T = Image.Transpose
DIHEDRAL_OPS: dict[str, Image.Transpose | None] = {
    "identity": None,
    "rot90": _T.ROTATE_90,
    "rot180": _T.ROTATE_180,
    "rot270": _T.ROTATE_270,
    "mirror": _T.FLIP_LEFT_RIGHT,
    "mirror_rot90": _T.TRANSPOSE,
    "mirror_rot180": _T.FLIP_TOP_BOTTOM,
    "mirror_rot270": _T.TRANSVERSE,
}
DIHEDRAL_NAMES: tuple[str, ...] = tuple(DIHEDRAL_OPS)
# the transformation that undoes each one: rotations undo each other, reflections undo themselves
DIHEDRAL_INVERSE: dict[str, str] = {
    **{name: name for name in DIHEDRAL_NAMES},
    "rot90": "rot270",
    "rot270": "rot90",
}


@dataclass(frozen=True)
class GlobalHashes:
    ahash: Hash
    dhash: Hash
    phash: Hash
    dihedral: tuple[Hash, ...]  # pHashes in DIHEDRAL_NAMES order (or the pHash alone); dihedral[0] == phash

    def dihedral_by_name(self) -> dict[str, Hash]:
        return dict(zip(DIHEDRAL_NAMES, self.dihedral, strict=True))


def grey(img: Image.Image) -> Image.Image:
    """8-bit greyscale exactly as imagehash makes it (``convert('L')``; alpha is ignored)."""
    return img if img.mode == "L" else img.convert("L")


def ahash(img: Image.Image) -> Hash:
    return _ahash(grey(img))


def dhash(img: Image.Image) -> Hash:
    return _dhash(grey(img))


def phash(img: Image.Image) -> Hash:
    return _phash_stack(_resized(grey(img), (PHASH_SIDE, PHASH_SIDE))[None])[0]


def global_hashes(img: Image.Image, with_dihedral: bool = True) -> GlobalHashes:
    """aHash, dHash, pHash and (for queries) the 8 dihedral pHashes, converting to greyscale once.
    Without ``with_dihedral`` (stored images need only the pHash) ``dihedral`` holds the pHash alone."""
    g = grey(img)
    arrays = _dihedral_arrays(g) if with_dihedral else _resized(g, (PHASH_SIDE, PHASH_SIDE))[None]
    dihedral = _phash_stack(arrays)
    return GlobalHashes(ahash=_ahash(g), dhash=_dhash(g), phash=dihedral[0], dihedral=tuple(dihedral))


def dihedral(img: Image.Image) -> list[tuple[str, Image.Image]]:
    """The 8 rotations/flips of img in DIHEDRAL_NAMES order; 'identity' is img itself, not a copy."""
    return [(name, img if op is None else img.transpose(op)) for name, op in DIHEDRAL_OPS.items()]


def phash_dihedral(img: Image.Image) -> dict[str, Hash]:
    """{name: pHash of img transformed by name}, equal to phash(img.transpose(op)) bit for bit."""
    return dict(zip(DIHEDRAL_NAMES, _phash_stack(_dihedral_arrays(grey(img))), strict=True))


def box_pixels(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel rectangle (left, upper, right, lower) for a box of fractions (x0, y0, x1, y1):
    edges rounded to the nearest pixel (halves up), at least one pixel wide and high."""
    x0, y0, x1, y1 = box
    eps = 1e-9
    if not (-eps <= x0 < x1 <= 1 + eps and -eps <= y0 < y1 <= 1 + eps):
        raise ValueError(f"box {box} is not x0 < x1, y0 < y1 within [0, 1]")
    width, height = size
    left, right = _edges(x0, x1, width)
    upper, lower = _edges(y0, y1, height)
    return left, upper, right, lower


def phash_boxes(gray_image: Image.Image, boxes: Sequence[Box]) -> list[Hash]:
    """pHash of each box of the image, equal to ``phash(img.crop(box_pixels(box, img.size)))``.

    The image is converted to greyscale once and the DCTs run as one batch; each box is still
    cropped and resized on its own, because resizing with Pillow's ``box=`` argument (or from a
    shared smaller copy) would blend in pixels outside the box and break the equality.
    """
    g = grey(gray_image)
    stack = np.empty((len(boxes), PHASH_SIDE, PHASH_SIDE), dtype=np.uint8)
    for i, box in enumerate(boxes):
        stack[i] = _resized(g.crop(box_pixels(box, g.size)), (PHASH_SIDE, PHASH_SIDE))
    return _phash_stack(stack)


# --- internals ----------------------------------------------------------------------------------


def _resized(g: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(g.resize(size, LANCZOS))


def _ahash(g: Image.Image) -> Hash:
    pixels = _resized(g, (HASH_SIZE, HASH_SIZE))
    return _to_hash(pixels > np.mean(pixels))


def _dhash(g: Image.Image) -> Hash:
    pixels = _resized(g, (HASH_SIZE + 1, HASH_SIZE))
    return _to_hash(pixels[:, 1:] > pixels[:, :-1])


def _dihedral_arrays(g: Image.Image) -> np.ndarray:
    """The 32x32 resized grey arrays of the 8 transformations of g, in DIHEDRAL_NAMES order."""
    a = _resized(g, (PHASH_SIDE, PHASH_SIDE))
    t = _resized(g.transpose(_T.TRANSPOSE), (PHASH_SIDE, PHASH_SIDE))  # = mirror_rot90
    # flips commute with the resize; np.rot90(a) == a.T[::-1], so every turn is a flip of t
    return np.stack([a, t[::-1], a[::-1, ::-1], t[:, ::-1], a[:, ::-1], t, a[::-1], t[::-1, ::-1]])


def _phash_stack(pixels: np.ndarray) -> list[Hash]:
    """pHashes of n 32x32 uint8 arrays, shape (n, 32, 32): imagehash's DCT, batched."""
    if len(pixels) == 0:
        return []
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)
    low = dct[:, :HASH_SIZE, :HASH_SIZE]
    medians = np.median(low.reshape(len(low), -1), axis=1)
    return [_to_hash(bits) for bits in low > medians[:, None, None]]


def _to_hash(bits: np.ndarray) -> Hash:
    """Flattened bools, first = most significant bit (imagehash's order, as Hash.from_bools)."""
    flat = bits.ravel()
    value = int.from_bytes(np.packbits(flat).tobytes(), "big") >> (-flat.size % 8)
    return Hash(value, flat.size)


def _edges(start: float, end: float, n: int) -> tuple[int, int]:
    low = min(max(int(start * n + 0.5), 0), n - 1)
    high = min(max(int(end * n + 0.5), low + 1), n)
    return low, high
