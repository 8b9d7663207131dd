"""PDQ, Facebook's 256-bit perceptual hash, in numpy.

This follows the published algorithm and the ThreatExchange reference implementation
(pdq/cpp/hashing/pdqhashing.cpp, pdq/cpp/downscaling/downscaling.cpp):

1. luminance Y = 0.299 R + 0.587 G + 0.114 B, as floats;
2. a Jarosz tent filter: two rounds of a box filter along rows then along columns, with a window
   of ``(dim + 2*64 - 1) // (2*64)`` pixels per axis (the reference's asymmetric, edge-shortened box);
3. decimation to 64x64 by sampling the blurred image at ``floor((i + 0.5) * dim / 64)``;
4. quality: the sum of the significant gradients of the 64x64 image, ``// 90``, clamped to 0..100;
5. the 16x16 lowest non-DC coefficients of the 2D DCT of the 64x64 image (the reference's DCT matrix);
6. bit ``i*16 + j`` is set when coefficient ``[i][j]`` is strictly above the median (the 128th smallest).

Steps 2-3 are linear and separable, and only 64 rows and 64 columns of the blurred image are ever
read, so instead of blurring every pixel we build, per axis, the 64 x dim matrix of the composed
filter-then-sample and apply it: ``Kv @ Y @ Kh.T``. Each row of those matrices touches only ~dim/64
inputs, so they are kept as (index, weight) bands; the vertical one is applied straight to the
uint8 RGB pixels (read from PIL in strips) and luminance taken after it, on the 64 x width x 3
result. A 1 MP photo takes about 1.5-2.5 ms of CPU (bench/pdq.py); the float sums differ from the
reference's only by rounding, and on our 301 pool photos hashes and qualities are bit-identical.

Bit order: the reference's Hash256 sets bit k (k = i*16 + j) as ``1 << k`` of a 256-bit number and
prints it as 64 hex digits, most significant first. Our ``Hash.value`` is that same number, so
``Hash.hex()`` equals the reference's hex (pdq-photo-hasher, ThreatExchange). The ``pdqhash``
Python package returns a 256-long vector whose first element is bit 255, which is exactly
``Hash.from_bools(vector)``.

The dihedral variants are computed from the DCT by sign flips and a transposition, as the reference
does: mirroring an image left-right negates its even-indexed (odd-frequency) horizontal coefficients,
flipping it upside down does the same vertically, and transposing it transposes the coefficients.
The names follow PIL: ``rot90`` is ``Image.rotate(90, expand=True)`` (counter-clockwise) and
``mirror_*`` is ``ImageOps.mirror`` (left-right) first, then the rotation. The reference's
``compute_dihedral`` order (original, rotate90, rotate180, rotate270, flipX, flipY, flipPlus1,
flipMinus1) is ``REFERENCE_DIHEDRAL_ORDER`` in these names. Because the reference's box filter and
sampling grid are not mirror-symmetric (off by a pixel) for most sizes, a variant differs from the
hash of the actually transformed image by ~8-15 bits on average (up to ~44 on our photos), exactly as
the reference's do; for sizes 128*m + 64 with m even (64, 320, 576, 832 ...) they are equal.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from engine.hashes import DIHEDRAL_NAMES  # the engine's names for the 8 rotations/flips
from engine.model import Hash

BITS = 256
SIDE = 64  # the downsampled image is SIDE x SIDE
DCT_SIDE = 16  # coefficients 1..16 of each axis are kept
MIN_HASHABLE_DIM = 5  # smaller images hash to 0 with quality 0, as in the reference
STRIP_BYTES = 1 << 22  # PIL images are converted to numpy 4 MB at a time

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# pdqhash.compute_dihedral / the reference's pdqDihedralHash256esFromFloatLuma order, in our names.
REFERENCE_DIHEDRAL_ORDER = (
    "identity",  # original
    "rot90",  # rotate90 (counter-clockwise)
    "rot180",  # rotate180
    "rot270",  # rotate270
    "mirror_rot180",  # flipX: upside down
    "mirror",  # flipY: left-right
    "mirror_rot90",  # flipPlus1: transpose
    "mirror_rot270",  # flipMinus1: anti-transpose
)


def _dct_matrix() -> np.ndarray:
    """The reference's 16 x 64 DCT-II matrix, rows for frequencies 1..16 (DC is dropped)."""
    i = np.arange(1, DCT_SIDE + 1)[:, None]
    j = np.arange(SIDE)[None, :]
    matrix = np.sqrt(2.0 / SIDE) * np.cos(np.pi / 2.0 / SIDE * i * (2 * j + 1))
    return matrix.astype(np.float32).astype(np.float64)  # the reference stores it as float


_DCT = _dct_matrix()

# Coefficient k (frequency k + 1) changes sign when its axis is reversed iff k is even.
_SIGN = np.where(np.arange(DCT_SIDE) % 2 == 1, 1.0, -1.0)
_ROWS = _SIGN[:, None]  # reversing the image upside down
_COLS = _SIGN[None, :]  # reversing the image left-right

_DIHEDRAL_FROM_DCT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda d: d,
    "rot90": lambda d: d.T * _ROWS,  # transpose, then upside down
    "rot180": lambda d: d * _ROWS * _COLS,
    "rot270": lambda d: d.T * _COLS,  # transpose, then left-right
    "mirror": lambda d: d * _COLS,
    "mirror_rot90": lambda d: d.T,
    "mirror_rot180": lambda d: d * _ROWS,
    "mirror_rot270": lambda d: d.T * _ROWS * _COLS,
}


def jarosz_window(dim: int, out: int = SIDE) -> int:
    """Box-filter window along an axis of `dim` pixels (half the decimation step, rounded up)."""
    return (dim + 2 * out - 1) // (2 * out)


@lru_cache(maxsize=64)
def _axis_filter(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Two box-filter passes then decimation to 64 samples, along an axis of `dim` pixels.

    As a 64 x dim matrix this is banded, so it is returned as (index, weight), both 64 x width:
    sample s = sum over k of weight[s, k] * input[index[s, k]] (read-only arrays, weight float32).
    The box is the reference's box1DFloat: output o averages inputs o - (w - h) .. o + h - 1,
    h = (w + 2) // 2, clipped to the image and divided by the number of inputs actually summed.
    """
    window = jarosz_window(dim)
    half = (window + 2) // 2
    positions = np.arange(dim)
    lo = np.maximum(0, positions - (window - half))
    hi = np.minimum(dim, positions + half)
    count = (hi - lo).astype(np.float64)
    samples = ((2 * np.arange(SIDE) + 1) * dim) // (2 * SIDE)  # floor((i + 0.5) * dim / 64)

    # Row s = (1/count[c]) * sum over k in box(c) of box-row k, c = samples[s]; box-row k is
    # 1/count[k] on [lo[k], hi[k]). Accumulate those steps as +/- deltas, then integrate.
    deltas = np.zeros((SIDE, dim + 1))
    for s, c in enumerate(samples):
        ks = np.arange(lo[c], hi[c])
        weight = 1.0 / (count[c] * count[ks])
        np.add.at(deltas[s], lo[ks], weight)
        np.add.at(deltas[s], hi[ks], -weight)
    matrix = np.cumsum(deltas, axis=1)[:, :dim]

    start = lo[lo[samples]]  # first and last input that reach each sample
    stop = hi[hi[samples] - 1]
    offsets = start[:, None] + np.arange(int((stop - start).max()))
    index = np.minimum(offsets, dim - 1)
    weight = np.where(offsets < stop[:, None], np.take_along_axis(matrix, index, axis=1), 0.0).astype(np.float32)
    index.flags.writeable = False
    weight.flags.writeable = False
    return index, weight


def _strips(rows_index: np.ndarray, row_bytes: int, strip_bytes: int) -> list[range]:
    """Consecutive sample rows grouped so that the input rows each group reads fit in strip_bytes."""
    strips, first = [], 0
    for s in range(1, SIDE):
        if (rows_index[s, -1] + 1 - rows_index[first, 0]) * row_bytes > strip_bytes:
            strips.append(range(first, s))
            first = s
    strips.append(range(first, SIDE))
    return strips


def downsample_64(image: Image.Image | np.ndarray, strip_bytes: int = STRIP_BYTES) -> np.ndarray:
    """The reference's 64x64 float luminance (float32) of an RGB PIL image or H x W x 3 uint8 array.

    A PIL image is read a horizontal strip of at most strip_bytes at a time: converting a large
    image to one numpy array costs far more (fresh memory) than the filtering itself. Sums are
    einsum, not BLAS: these products are small, and a multi-threaded BLAS stalls for tens of
    milliseconds on them when the machine is busy.
    """
    if isinstance(image, Image.Image):
        width, height = image.size

        def read(first: int, stop: int) -> np.ndarray:
            return np.asarray(image.crop((0, first, width, stop)))

    else:
        height, width = image.shape[:2]

        def read(first: int, stop: int) -> np.ndarray:
            return image[first:stop]

    rows_index, rows_weight = _axis_filter(height)
    cols_index, cols_weight = _axis_filter(width)
    rows = np.empty((SIDE, width * 3), dtype=np.float32)
    for strip in _strips(rows_index, width * 3, strip_bytes):
        first, stop = int(rows_index[strip[0], 0]), int(rows_index[strip[-1], -1]) + 1
        pixels = read(first, stop).reshape(stop - first, width * 3)
        for s in strip:  # the band of input rows that reaches sample row s
            rows[s] = np.einsum("k,kx->x", rows_weight[s], pixels[rows_index[s] - first], dtype=np.float32)
    luma_rows = np.einsum("swc,c->sw", rows.reshape(SIDE, width, 3), LUMA)  # 64 x width
    return np.einsum("rsk,sk->rs", luma_rows[:, cols_index], cols_weight)


def quality_metric(small: np.ndarray) -> int:
    """The reference's heuristic: significant gradients of the 64x64 image, // 90, at most 100."""
    small = small.astype(np.float32)
    hundred, full = np.float32(100), np.float32(255)
    vertical = np.trunc((small[:-1, :] - small[1:, :]) * hundred / full)
    horizontal = np.trunc((small[:, :-1] - small[:, 1:]) * hundred / full)
    gradient_sum = int(np.abs(vertical).sum(dtype=np.int64) + np.abs(horizontal).sum(dtype=np.int64))
    return min(gradient_sum // 90, 100)


def dct_16(small: np.ndarray) -> np.ndarray:
    """Coefficients (1..16) x (1..16) of the 2D DCT of a 64x64 image; [i][j]: i vertical, j horizontal."""
    return _DCT @ small.astype(np.float64) @ _DCT.T


def bits_to_hash(coefficients: np.ndarray) -> Hash:
    """Bit i*16 + j (value 1 << (i*16 + j)) is set when coefficient [i][j] exceeds the median."""
    flat = coefficients.reshape(-1)
    median = np.partition(flat, BITS // 2 - 1)[BITS // 2 - 1]  # Torben's median: the 128th smallest
    bits = flat > median
    return Hash(int.from_bytes(np.packbits(bits[::-1]).tobytes(), "big"), BITS)


def pdq_dct(image: Image.Image) -> tuple[np.ndarray | None, int]:
    """The 16x16 float DCT the hash thresholds, and the quality; None for images under 5 px a side."""
    if min(image.size) < MIN_HASHABLE_DIM:
        return None, 0
    small = downsample_64(image if image.mode == "RGB" else image.convert("RGB"))
    return dct_16(small), quality_metric(small)


def pdq_hash(image: Image.Image) -> tuple[Hash, int]:
    """PDQ hash (256 bits) and quality (0..100; below ~50 the hash is unreliable) of an image."""
    coefficients, quality = pdq_dct(image)
    if coefficients is None:
        return Hash(0, BITS), 0
    return bits_to_hash(coefficients), quality


def pdq_dihedral(image: Image.Image) -> tuple[dict[str, Hash], int]:
    """The PDQ hashes of the 8 rotations/mirrors of an image (see DIHEDRAL_NAMES), and its quality.

    ``result["rot90"]`` approximates ``pdq_hash(image.rotate(90, expand=True))`` and
    ``result["mirror_rot90"]`` that of ``ImageOps.mirror(image).rotate(90, expand=True)``.
    """
    coefficients, quality = pdq_dct(image)
    if coefficients is None:
        return {name: Hash(0, BITS) for name in DIHEDRAL_NAMES}, 0
    return {name: bits_to_hash(_DIHEDRAL_FROM_DCT[name](coefficients)) for name in DIHEDRAL_NAMES}, quality
