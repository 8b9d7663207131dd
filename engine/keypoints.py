"""Local features: ORB keypoints spread over the image, packed for a bytea column, and visual words.

ORB descriptors are 256-bit hashes of small patches around scale- and rotation-covariant
keypoints, so a crop, a paste or a composite keeps the descriptors of the content it shows.

- ``extract(image)``: at most ``MAX_FEATURES`` (stored) keypoints, bucketed on a 4x4 grid so
  that every textured part of the image keeps some (a 15% crop keeps ~75 of 500).
  ``extract(image, QUERY_FEATURES, QUERY_WORKING_SIDE)`` for a query: more keypoints, so that a
  picture pasted into it or one cell of a composite still has enough.
  ``extract(image, mirror=True)`` describes the mirrored image but reports coordinates in the
  original frame: the query side extracts both, since ORB is not mirror-invariant.
- ``to_bytes`` / ``from_bytes``: 9 + 39 bytes per keypoint (descriptor, position, size, angle).
- ``words(kp)``: one visual word per keypoint: the leaf of a vocabulary tree (hierarchical
  k-majority, 10^5 leaves) refined by 6 descriptor bits chosen per leaf: 6.4M words
  (bench/train_vocab.py trains it; engine/data/orb_vocab.npz, 3.2 MB). ``assign > 1`` adds each
  descriptor's next nearest leaves (query side only).
- ``postings(kp)``: words with each keypoint's angle and pyramid level, the rows of the inverted
  index, so that SQL can score candidates by weak geometric consistency.

All choices are measured by ``bench/keypoints.py`` on the benchmark corpus.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from . import hashes
from .model import Keypoints

MAX_FEATURES = 500  # stored per image: 19.5 KB packed, <= 500 postings (measured in bench/keypoints.py)
WORKING_SIDE = 768  # longer side of the image ORB sees (never upscaled)
QUERY_FEATURES = 1000  # a query is described once: more keypoints find pictures pasted into it
QUERY_WORKING_SIDE = 1024
QUERY_GRID = 6  # a finer grid, so a smooth picture pasted onto busy texture keeps its keypoints
GRID = 4  # GRID x GRID cells, each keeps its share of the strongest keypoints
OVERSAMPLE = 4  # ORB is asked for OVERSAMPLE * max_features before bucketing
SCALE_FACTOR = 1.3  # 8 pyramid levels span 6.3x: pastes and composites shrink pictures 2-3x
N_LEVELS = 8
FAST_THRESHOLD = 12
EDGE_THRESHOLD = 15  # ORB finds no keypoint this close to a border
# below this side ORB finds nothing at all, and OpenCV fails (an assertion in resize) on images
# whose smaller pyramid levels round to 0 pixels (a 1x1 image, a 10000x2 strip): not asked
MIN_SIDE = 2 * EDGE_THRESHOLD + 1
VOCABULARY = Path(__file__).parent / "data" / "orb_vocab.npz"

_MAGIC = b"KP1"
_HEADER = struct.Struct("<3sHHH")  # magic, width, height, count
_XY_STEP = 1 / 16  # positions in 1/16 pixel: up to 4095 px


def working_image(image: Image.Image, working_side: int = WORKING_SIDE) -> np.ndarray:
    """The grey uint8 array ORB sees: the longer side at most `working_side`, never upscaled
    (`image` may be the 'L' copy already made for the hashes)."""
    grey = hashes.grey(image)
    w, h = grey.size
    factor = working_side / max(w, h)
    if factor < 1:
        grey = grey.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BILINEAR)
    return np.asarray(grey)


def _orb(want: int) -> cv2.ORB:
    return cv2.ORB_create(nfeatures=want, scaleFactor=SCALE_FACTOR, nlevels=N_LEVELS,
                          edgeThreshold=EDGE_THRESHOLD, patchSize=31, fastThreshold=FAST_THRESHOLD)


def _detect(grey: np.ndarray, want: int) -> list:
    """ORB keypoints (position, size, orientation; no descriptors yet)."""
    if min(grey.shape) < MIN_SIDE:
        return []
    orb = _orb(want)
    found = orb.detect(grey, None)
    if len(found) < want // 4:  # flat images: lower the corner threshold once
        orb.setFastThreshold(4)
        found = orb.detect(grey, None)
    return list(found)


def _select(grey: np.ndarray, max_features: int, grid: int) -> list:
    """The keypoints kept: OVERSAMPLE times too many detected, then spread over the grid. Only the
    kept ones get descriptors (describing all of them cost as much again as detecting them)."""
    h, w = grey.shape
    found = _detect(grey, max_features * OVERSAMPLE)
    if not found:
        return []
    xy = np.array([k.pt for k in found], dtype=np.float32)
    response = np.array([k.response for k in found], dtype=np.float32)
    return [found[i] for i in _bucket(xy, response, (w, h), max_features, grid)]


def _describe(grey: np.ndarray, found: list, mirrored: bool) -> Keypoints:
    """Descriptors of `found` on `grey`; for a mirrored `grey`, positions and angles are mapped
    back into the original frame."""
    h, w = grey.shape
    if not found:
        return empty((w, h))
    found, desc = _orb(len(found)).compute(grey, found)
    if not found or desc is None:
        return empty((w, h))
    xy = np.array([k.pt for k in found], dtype=np.float32)
    angle = np.array([k.angle for k in found], dtype=np.float32)
    scale = np.array([k.size for k in found], dtype=np.float32)
    if mirrored:
        xy[:, 0] = w - xy[:, 0]
        angle = (180.0 - angle) % 360.0
    return Keypoints(size=(w, h), xy=xy, scale=scale, angle=angle, descriptors=np.ascontiguousarray(desc))


def _bucket(xy: np.ndarray, response: np.ndarray, size: tuple[int, int], keep: int, grid: int) -> np.ndarray:
    """Indices of at most `keep` keypoints: the strongest of each grid cell first, then the rest."""
    if len(xy) <= keep:
        return np.arange(len(xy))
    w, h = size
    cell = (np.minimum(xy[:, 0] * grid // w, grid - 1) * grid + np.minimum(xy[:, 1] * grid // h, grid - 1)).astype(int)
    order = np.lexsort((-response, cell))  # by cell, strongest first
    rank = np.empty(len(xy), dtype=int)
    starts = np.searchsorted(cell[order], np.arange(grid * grid))
    rank[order] = np.arange(len(xy)) - starts[cell[order]]
    quota = keep // (grid * grid)
    first = np.flatnonzero(rank < quota)
    rest = np.flatnonzero(rank >= quota)
    rest = rest[np.argsort(-response[rest], kind="stable")][: keep - len(first)]
    return np.sort(np.concatenate([first, rest]))


def extract(image: Image.Image, max_features: int = MAX_FEATURES, working_side: int = WORKING_SIDE,
            mirror: bool = False, grid: int = GRID) -> Keypoints:
    """ORB keypoints of `image` (any mode), in pixels of the working image of size `Keypoints.size`.

    mirror=True describes the left-right mirrored image, with x (and angle) mapped back into
    the original frame, so a match against a mirrored copy shows up as a reflection.
    """
    grey = working_image(image, working_side)
    if mirror:
        grey = np.ascontiguousarray(grey[:, ::-1])
    return _describe(grey, _select(grey, max_features, grid), mirror)


def extract_with_mirror(image: Image.Image, max_features: int = MAX_FEATURES, working_side: int = WORKING_SIDE,
                        grid: int = GRID, grey: np.ndarray | None = None) -> tuple[Keypoints, Keypoints]:
    """``extract(image)`` and a mirrored description, for a query, detecting once: the mirror of a
    corner is a corner of the mirrored image, with the reflected orientation (180 - angle), so
    the kept keypoints are reflected and described on the mirrored image instead of being found
    again (the same descriptors, at a tenth of the cost of a second ``extract(mirror=True)``).
    ``grey``: the image's :func:`working_image` at ``working_side``, if already made."""
    grey = working_image(image, working_side) if grey is None else grey
    found = _select(grey, max_features, grid)
    w = grey.shape[1]
    reflected = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave,
                              k.class_id) for k in found]
    return _describe(grey, found, False), _describe(np.ascontiguousarray(grey[:, ::-1]), reflected, True)


def extract_part(grey: np.ndarray, box: tuple[float, float, float, float], zoom: float,
                 max_features: int = MAX_FEATURES, mirror: bool = False, grid: int = GRID) -> Keypoints:
    """Keypoints of a part of a working image, described on their own (guided verification).

    ``box`` (fractions of ``grey``) is cut out, resized by ``zoom`` (so that its content is seen at
    the scale of the image it is compared with), and described with ``max_features`` keypoints of
    its own; positions and sizes are given back in pixels of the whole of ``grey``, whose size the
    result carries, so a transform fitted on them is one of the whole query. A small picture
    inside a large query (one cell of a collage, a screenshot's content) gets a few dozen of the
    query's keypoints; described alone it gets hundreds.
    """
    h, w = grey.shape
    x0, y0 = max(0, int(box[0] * w)), max(0, int(box[1] * h))
    x1, y1 = min(w, int(np.ceil(box[2] * w))), min(h, int(np.ceil(box[3] * h)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return empty((w, h))
    part = grey[y0:y1, x0:x1]
    size = (max(1, round((x1 - x0) * zoom)), max(1, round((y1 - y0) * zoom)))
    part = cv2.resize(part, size, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    if mirror:
        part = np.ascontiguousarray(part[:, ::-1])
    kp = _describe(part, _select(part, max_features, grid), mirror)
    fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    xy = kp.xy / np.array([fx, fy], dtype=np.float32) + np.array([x0, y0], dtype=np.float32)
    return Keypoints(size=(w, h), xy=xy.astype(np.float32), scale=(kp.scale / ((fx + fy) / 2)).astype(np.float32),
                     angle=kp.angle, descriptors=kp.descriptors)


def empty(size: tuple[int, int]) -> Keypoints:
    return Keypoints(size=size, xy=np.zeros((0, 2), np.float32), scale=np.zeros(0, np.float32),
                     angle=np.zeros(0, np.float32), descriptors=np.zeros((0, 32), np.uint8))


def to_bytes(kp: Keypoints) -> bytes:
    """Pack: header, then per keypoint 32 descriptor bytes, x and y (uint16, 1/16 px), size (float16), angle (uint8)."""
    n = len(kp)
    xy = np.clip(np.rint(np.asarray(kp.xy, dtype=np.float64) / _XY_STEP), 0, 65535).astype("<u2")
    size = np.asarray(kp.scale, dtype="<f2")
    angle = (np.rint(np.asarray(kp.angle, dtype=np.float64) * 256 / 360) % 256).astype(np.uint8)
    return b"".join([_HEADER.pack(_MAGIC, kp.size[0], kp.size[1], n), np.asarray(kp.descriptors, np.uint8).tobytes(),
                     xy.tobytes(), size.tobytes(), angle.tobytes()])


def from_bytes(data: bytes) -> Keypoints:
    magic, w, h, n = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("not packed keypoints")
    at = _HEADER.size
    if len(data) != at + 39 * n:
        raise ValueError(f"packed keypoints: {len(data)} bytes for {n} keypoints")
    desc = np.frombuffer(data, np.uint8, 32 * n, at).reshape(n, 32)
    at += 32 * n
    xy = np.frombuffer(data, "<u2", 2 * n, at).reshape(n, 2).astype(np.float32) * _XY_STEP
    at += 4 * n
    size = np.frombuffer(data, "<f2", n, at).astype(np.float32)
    at += 2 * n
    angle = np.frombuffer(data, np.uint8, n, at).astype(np.float32) * (360 / 256)
    return Keypoints(size=(w, h), xy=xy, scale=size, angle=angle, descriptors=desc.copy())


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between rows of packed descriptors a (n, B) and b (m, B)."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """A complete vocabulary tree, refined by a few descriptor bits chosen per leaf.

    levels[l] has shape (branching**(l+1), 32): the centres of the nodes at depth l+1, the
    children of node n being rows n*branching .. n*branching+branching-1. bits has shape
    (branching**depth, b): for each leaf, the b descriptor bits (0..255, np.unpackbits order)
    that split its training descriptors most evenly; a word is leaf * 2**b + those bits, so
    there are branching**depth * 2**b words: 16x more words per bit than leaves for a few
    hundred KB, where a tree level would cost 32 bytes per node.
    """

    branching: int
    depth: int
    levels: tuple[np.ndarray, ...]
    bits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))

    @property
    def leaves(self) -> int:
        return self.branching**self.depth

    @property
    def refine(self) -> int:
        return self.bits.shape[1] if len(self.bits) else 0

    @property
    def size(self) -> int:
        return self.leaves << self.refine

    def save(self, path: Path) -> None:
        np.savez_compressed(path, branching=self.branching, depth=self.depth, bits=self.bits,
                            **{f"level{i}": lv for i, lv in enumerate(self.levels)})

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        with np.load(path) as f:
            depth = int(f["depth"])
            bits = f["bits"] if "bits" in f else np.zeros((0, 0), np.uint8)
            return cls(int(f["branching"]), depth, tuple(f[f"level{i}"] for i in range(depth)), bits)

    def lookup(self, descriptors: np.ndarray, assign: int = 1, depth: int | None = None,
               refine: int | None = None) -> np.ndarray:
        """Word ids (n, assign) int32: first the greedy descent's leaf (the word the stored side gets),
        then the next nearest leaves found by a beam search, each refined by its leaf's bits.

        depth < self.depth gives the leaves of a coarser tree (no bits); refine < self.refine uses
        only the first `refine` bits of each leaf.
        """
        depth = self.depth if depth is None else depth
        refine = (self.refine if depth == self.depth else 0) if refine is None else refine
        greedy = self._descend(descriptors, 1, depth)[:, :1]
        if assign > 1:
            beam = self._descend(descriptors, assign + 1, depth)
            others = np.where(beam == greedy, np.iinfo(np.int64).max, beam)  # drop the greedy leaf, keep the order
            others = np.take_along_axis(others, np.argsort(others == np.iinfo(np.int64).max, axis=1, kind="stable"), 1)
            greedy = np.concatenate([greedy, others[:, : assign - 1]], axis=1)
        if refine and len(greedy):
            unpacked = np.unpackbits(descriptors, axis=1)
            chosen = self.bits[greedy, :refine].astype(np.intp)  # (n, assign, refine)
            values = np.take_along_axis(unpacked, chosen.reshape(len(greedy), -1), axis=1).reshape(chosen.shape)
            greedy = (greedy << refine) | (values.astype(np.int64) << np.arange(refine)).sum(axis=2)
        return greedy.astype(np.int32)

    @cached_property
    def _levels64(self) -> tuple[np.ndarray, ...]:
        """The node centres as 64-bit words (4 per ORB descriptor): popcounts over 4 words
        instead of 32 bytes."""
        return tuple(np.ascontiguousarray(level).view(np.uint64) for level in self.levels)

    def _descend(self, descriptors: np.ndarray, beam: int, depth: int) -> np.ndarray:
        """(n, beam) leaves at `depth`, nearest first, keeping the `beam` nearest nodes at every level
        (ties to the lower node, as a stable sort orders them)."""
        k = self.branching
        n = len(descriptors)
        nodes = np.zeros((n, 1), dtype=np.int64)
        if n == 0:
            return np.zeros((0, beam), dtype=np.int64)
        query = np.ascontiguousarray(descriptors, dtype=np.uint8).view(np.uint64)  # (n, 4)
        for level in range(depth):
            children = (nodes[:, :, None] * k + np.arange(k)).reshape(n, -1)  # (n, b*k)
            centres = self._levels64[level][children]  # (n, b*k, 4)
            dist = np.bitwise_count(centres ^ query[:, None, :]).sum(axis=2, dtype=np.int32)
            if beam == 1:  # the greedy descent: argmin keeps the first of equal distances too
                best = dist.argmin(axis=1)[:, None]
            else:
                best = np.argsort(dist, axis=1, kind="stable")[:, : min(children.shape[1], beam)]
            nodes = np.take_along_axis(children, best, axis=1)
        return nodes


@cache
def vocabulary(path: Path = VOCABULARY) -> Vocabulary:
    return Vocabulary.load(path)


def words(kp: Keypoints, assign: int = 1, vocab: Vocabulary | None = None) -> np.ndarray:
    """Visual word per keypoint (int32, shape (n,)); with assign > 1, the flattened (n * assign,) nearest leaves."""
    vocab = vocab or vocabulary()
    if len(kp) == 0:
        return np.zeros(0, dtype=np.int32)
    found = vocab.lookup(np.asarray(kp.descriptors, np.uint8), assign)
    return found[:, 0].copy() if assign == 1 else found.reshape(-1)


@dataclass(frozen=True, eq=False)
class Postings:
    """Rows of the inverted index for one image's keypoints: word, angle and pyramid level.

    angle: 0..255 for 0..360 degrees; level: log of the keypoint size in half pyramid levels.
    Two keypoints that match under a similarity differ by about the same angle and level for all
    matches of a pair of images, so a candidate is scored by its best (angle, level) bin: weak
    geometric consistency, computable in SQL from these small integers.
    """

    word: np.ndarray  # int32
    angle: np.ndarray  # int16
    level: np.ndarray  # int16


def postings(kp: Keypoints, assign: int = 1, mirror: bool = False, vocab: Vocabulary | None = None) -> Postings:
    """The keypoints' words with their angle and level; mirror=True for ``extract(..., mirror=True)`` keypoints
    (a reflection turns angles the other way, so they are negated to vote in the same bin)."""
    word = words(kp, assign, vocab)
    angle = np.asarray(kp.angle, np.float64)
    angle = np.rint((-angle if mirror else angle) * 256 / 360).astype(np.int64) % 256
    level = np.rint(2 * np.log(np.maximum(np.asarray(kp.scale, np.float64), 1) / 31) / np.log(SCALE_FACTOR))
    return Postings(word, np.repeat(angle, assign).astype(np.int16), np.repeat(level, assign).astype(np.int16))


def word_counts(kp: Keypoints, vocab: Vocabulary | None = None) -> dict[int, int]:
    """{word: keypoints quantised to it}: the rows of keypoint_words(word, image_id, hits) for one image."""
    ids, counts = np.unique(words(kp, vocab=vocab), return_counts=True)
    return {int(w): int(c) for w, c in zip(ids, counts, strict=True)}
