"""Pictures inside pictures: rectangles that differ from what surrounds them.

Each box found here is hashed as a region. On the query side its pHash is compared with the
stored images' global pHashes (and their regions); on the stored side it lets a stored composite
be found from one of its parts. Three finders, all on one RGB work copy (longer side <= WORK_SIDE):

- canvas: when the image border is one uniform colour (a frame, a letterbox, a collage on a
  plain background), pixels that differ from it are split into pictures along uniform gutters
  (recursive XY cut). The mask compares luma tightly (a white picture on a 250-grey canvas is
  still a picture) and chroma loosely, because JPEG blurs colour edges over several pixels but
  keeps luma edges sharp.
- caption: a bar of one colour (not the canvas colour) across the top, bottom, left or right
  edge, possibly with text on it, ending at a straight edge across ``BAR_EDGE_COVERAGE`` of the
  image. The rest of the image is a picture; ``cover_bars`` paints the bars over (``BAR_FILLS``),
  which gives a whole-image pHash close to that of the uncovered original.
- rectangles (only when there is no canvas): a photo pasted onto another photo is bounded by four
  straight, axis-aligned step edges. Rows and columns holding long runs of edge pixels
  (steps of ``EDGE_STEP`` levels kept where they are the strongest of three neighbouring rows,
  gaps of at most ``RUN_GAP`` px) are candidate sides; every rectangle they form is scored by the
  share of each side that is edge. Rectangles whose weakest side reaches ``MIN_SIDE_COVERAGE``
  are ranked by evidence (covered minus uncovered side pixels); at most one side may be the
  image border. Measured on the benchmark corpus (bench/regions.py): 98% of pastes found within
  10 bits, 0.1 rectangles per unrelated photo.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ..explain import box_iou
from ..model import Box

WORK_SIDE = 1024
MAX_PICTURES = 8
DUPLICATE_IOU = 0.97  # boxes found twice (by two finders) are kept once
MIN_SIDE_PX = 16

# canvas
LUMA_TOLERANCE = 4  # a canvas pixel's luma (3x3 mean) is within this of the canvas colour
CHROMA_TOLERANCE = 16
UNIFORM_BORDER = 0.6  # share of border pixels that must be canvas-coloured
ROW_ALLOWANCE = 0.003  # a row or column of the canvas may have this share of other pixels
MIN_PICTURE = 0.08  # a picture spans at least this share of the width or of the height
MAX_CANVAS_AREA = 0.97  # larger: no canvas around it
XY_DEPTH = 4

# caption bars
BAR_COLOUR_TOLERANCE = 24
BAR_ROW_SHARE = 0.5  # a bar row has at least this share of pixels of the bar colour
BAR_MIN, BAR_MAX = 0.03, 0.4  # bar thickness, as a share of the image
BAR_EDGE_COVERAGE = 0.8
BAR_FILLS = ("edge", "fade")  # how the bars are painted over for the whole-image regions (see cover_bars)

# rectangles
EDGE_STEP = 8  # grey levels (max over RGB) between neighbouring pixels
RUN_GAP = 3
MIN_RECT = 0.1  # each side at least this share of the image's width / height
MAX_RECT_AREA = 0.9
MIN_SIDE_COVERAGE = 0.55
MAX_LINES = 40  # candidate rows / columns per image, longest runs first
MAX_RECTS = 3
RECT_OVERLAP = 0.5  # a rectangle overlapping a better one this much is dropped

PixelBox = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the work copy, end-exclusive


def picture_boxes(image: Image.Image) -> list[Box]:
    """Pictures inside ``image``: canvas splits, the part a caption bar leaves, pasted rectangles."""
    return find_pictures(image)[0]


def find_pictures(image: Image.Image) -> tuple[list[Box], Box | None]:
    """(picture boxes, the box left uncovered by caption bars or None)."""
    if min(image.size) < 2 * MIN_SIDE_PX:
        return [], None
    a = work_copy(image)
    h, w = a.shape[:2]
    edges = _edge_maps(a)
    found = canvas_boxes(a)
    uncovered = caption_box(a, edges, _canvas_colour(a) if found else None)
    if not found:  # pictures on a plain canvas are all found that way; only look for pasted ones elsewhere
        found = rectangle_boxes(a, edges)
    if uncovered:
        found.append(uncovered)
    boxes: list[PixelBox] = []
    for box in found:
        if all(box_iou(box, other) <= DUPLICATE_IOU for other in boxes):
            boxes.append(box)
    fractions = [(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in boxes[:MAX_PICTURES]]
    return fractions, (None if uncovered is None else (uncovered[0] / w, uncovered[1] / h,
                                                        uncovered[2] / w, uncovered[3] / h))


def work_copy(image: Image.Image, side: int | None = None) -> np.ndarray:
    """RGB pixels, longer side at most ``side`` (default WORK_SIDE)."""
    side = WORK_SIDE if side is None else side
    a = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # no needless full-size copy
    h, w = a.shape[:2]
    s = min(1.0, side / max(w, h))
    if s < 1:
        a = cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return a


# --- canvas -------------------------------------------------------------------------------------


def canvas_boxes(a: np.ndarray) -> list[PixelBox]:
    mask = _off_canvas(a)
    if mask is None:
        return []
    h, w = mask.shape
    leaves: list[PixelBox] = []
    _xy_cut(mask, (0, 0, w, h), XY_DEPTH, max(2, round(0.005 * min(w, h))), leaves)
    out = []
    for x0, y0, x1, y1 in leaves:
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < MIN_SIDE_PX or (bw < MIN_PICTURE * w and bh < MIN_PICTURE * h):
            continue
        if bw * bh <= MAX_CANVAS_AREA * w * h:
            out.append((x0, y0, x1, y1))
    return out


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[:2].reshape(-1, a.shape[2]), a[-2:].reshape(-1, a.shape[2]),
                           a[:, :2].reshape(-1, a.shape[2]), a[:, -2:].reshape(-1, a.shape[2])])


def _canvas_colour(a: np.ndarray) -> np.ndarray:
    """The median RGB colour of the image border."""
    return np.median(_border(a), axis=0)


def _off_canvas(a: np.ndarray) -> np.ndarray | None:
    """True where a pixel differs from the canvas colour; None if the border is not uniform."""
    # the border's pixels first (the whole image is converted only when they are uniform)
    border = cv2.cvtColor(np.ascontiguousarray(_border(a)[:, None]), cv2.COLOR_RGB2YCrCb)[:, 0].astype(np.int16)
    canvas = np.median(border, axis=0)
    if (np.abs(border - canvas).max(axis=1) <= LUMA_TOLERANCE + 4).mean() < UNIFORM_BORDER:
        return None
    blurred = cv2.blur(cv2.cvtColor(a, cv2.COLOR_RGB2YCrCb), (3, 3))
    tolerance = np.array([LUMA_TOLERANCE, CHROMA_TOLERANCE, CHROMA_TOLERANCE])
    lo, hi = np.clip(canvas - tolerance, 0, 255).astype(np.uint8), np.clip(canvas + tolerance, 0, 255).astype(np.uint8)
    return cv2.inRange(blurred, lo, hi) == 0


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of True."""
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _bands(flags: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs of True, merged across gaps narrower than ``gap``."""
    bands: list[list[int]] = []
    for s, e in _runs(flags):
        if bands and s - bands[-1][1] < gap:
            bands[-1][1] = e
        else:
            bands.append([s, e])
    return [(s, e) for s, e in bands]


def _xy_cut(mask: np.ndarray, box: PixelBox, depth: int, gap: int, out: list[PixelBox]) -> None:
    x0, y0, x1, y1 = box
    sub = mask[y0:y1, x0:x1]
    rows = _bands(sub.sum(axis=1) > ROW_ALLOWANCE * (x1 - x0), gap)
    cols = _bands(sub.sum(axis=0) > ROW_ALLOWANCE * (y1 - y0), gap)
    if not rows or not cols:
        return
    if depth > 0 and len(rows) > 1:
        for s, e in rows:
            _xy_cut(mask, (x0, y0 + s, x1, y0 + e), depth - 1, gap, out)
    elif depth > 0 and len(cols) > 1:
        for s, e in cols:
            _xy_cut(mask, (x0 + s, y0, x0 + e, y1), depth - 1, gap, out)
    else:
        out.append((x0 + cols[0][0], y0 + rows[0][0], x0 + cols[-1][1], y0 + rows[-1][1]))


# --- caption bars -------------------------------------------------------------------------------


def caption_box(a: np.ndarray, edges: tuple[np.ndarray, np.ndarray] | None = None,
                canvas: np.ndarray | None = None) -> PixelBox | None:
    """The part of the image not covered by bars along its edges, or None if there are none.
    Bars of the ``canvas`` colour (RGB) are margins of a collage, not captions."""
    h, w = a.shape[:2]
    eh, ev = edges if edges is not None else _edge_maps(a)
    top = _bar_depth(a, eh, canvas)
    bottom = _bar_depth(a[::-1], eh[::-1], canvas)
    left = _bar_depth(a.transpose(1, 0, 2), ev, canvas)
    right = _bar_depth(a.transpose(1, 0, 2)[::-1], ev[::-1], canvas)
    if not (top or bottom or left or right):
        return None
    box = (left, top, w - right, h - bottom)
    if box[2] - box[0] < MIN_SIDE_PX or box[3] - box[1] < MIN_SIDE_PX:
        return None
    return box


def _bar_depth(a: np.ndarray, edges: np.ndarray, canvas: np.ndarray | None = None) -> int:
    """Rows from the top (a's first axis) taken by a bar of one colour ending at a straight edge; 0 if none."""
    n = a.shape[0]
    colour = np.median(a[0], axis=0)
    if canvas is not None and np.abs(colour - canvas).max() <= BAR_COLOUR_TOLERANCE:
        return 0
    if _near(a[0][None], colour, BAR_COLOUR_TOLERANCE).mean() < BAR_ROW_SHARE:
        return 0  # not even the first row is a bar's (most photos): the depth below would be 0
    top = a[: int(BAR_MAX * n) + 2]
    if abs(top.strides[0]) < abs(top.strides[1]):  # a transposed view (left / right bars): test the pixels in place
        share = _near(top.transpose(1, 0, 2), colour, BAR_COLOUR_TOLERANCE).mean(axis=0)
    else:
        share = _near(top, colour, BAR_COLOUR_TOLERANCE).mean(axis=1)
    depth = int(np.argmin(share >= BAR_ROW_SHARE)) if (share < BAR_ROW_SHARE).any() else len(share)
    if not BAR_MIN * n <= depth <= BAR_MAX * n:
        return 0
    # the bar must end at a straight edge: edges[i] is the step between rows i and i + 1
    coverage = max(edges[i].mean() for i in range(depth - 2, min(depth + 1, len(edges))))
    return depth if coverage >= BAR_EDGE_COVERAGE else 0


def _near(a: np.ndarray, colour: np.ndarray, tolerance: int) -> np.ndarray:
    """Whether each pixel is within ``tolerance`` of ``colour`` in every channel."""
    lo = np.clip(colour - tolerance, 0, 255).astype(np.uint8)
    hi = np.clip(colour + tolerance, 0, 255).astype(np.uint8)
    return cv2.inRange(np.ascontiguousarray(a), lo, hi) > 0


def cover_bars(image: Image.Image, uncovered: Box, fill: str = "edge") -> Image.Image:
    """``image`` with everything outside ``uncovered`` painted over: with the nearest row or column
    inside it (``fill='edge'``), or fading from it to the mean colour inside (``fill='fade'``)."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = a.shape[:2]
    x0, y0 = min(w - 1, round(uncovered[0] * w)), min(h - 1, round(uncovered[1] * h))
    x1, y1 = max(x0 + 1, round(uncovered[2] * w)), max(y0 + 1, round(uncovered[3] * h))
    mean = a[y0:y1, x0:x1].mean(axis=(0, 1))
    out = a.copy()

    def paint(n: int, edge: np.ndarray) -> np.ndarray:  # n rows moving away from the edge row
        if fill == "edge" or n == 0:
            return np.broadcast_to(edge, (n, *edge.shape))
        t = (np.arange(1, n + 1, dtype=np.float32) / n)[:, None, None]
        return (1 - t) * edge + t * mean

    out[:y0] = paint(y0, a[y0])[::-1]
    out[y1:] = paint(h - y1, a[y1 - 1])
    out = out.transpose(1, 0, 2)  # columns as rows; covered rows above are repainted too
    out[:x0] = paint(x0, out[x0].copy())[::-1]
    out[x1:] = paint(w - x1, out[x1 - 1].copy())
    return Image.fromarray(np.clip(np.round(out.transpose(1, 0, 2)), 0, 255).astype(np.uint8))


# --- rectangles ---------------------------------------------------------------------------------


def rectangle_boxes(a: np.ndarray, edges: tuple[np.ndarray, np.ndarray] | None = None) -> list[PixelBox]:
    """Axis-aligned rectangles bounded by straight step edges, best first."""
    h, w = a.shape[:2]
    eh, ev = edges if edges is not None else _edge_maps(a)
    min_run = max(12, int(MIN_RECT * min(w, h)))
    # a side on line i lies between pixel rows (or columns) i and i + 1; -1 and n - 1 are the image border
    y0, y1 = _line_pairs(_lines(eh, min_run), h, MIN_RECT * h)
    x0, x1 = _line_pairs(_lines(ev, min_run), w, MIN_RECT * w)
    if len(y0) == 0 or len(x0) == 0:
        return []
    # coverage of each side for every (row pair p, column pair q): arrays of shape (P, Q)
    top, bottom = (_coverage(eh, ys, x0, x1, h) for ys in (y0, y1))
    left, right = (_coverage(ev, xs, y0, y1, w).T for xs in (x0, x1))
    width, height = (x1 - x0)[None, :].astype(np.float32), (y1 - y0)[:, None].astype(np.float32)
    sides = (top, bottom, left, right)
    # kept: every real side (not the image border) covered enough, at most one side on the border
    ok = width * height <= MAX_RECT_AREA * w * h
    on_border = np.zeros(top.shape, np.int8)
    for side in sides:
        ok = ok & ((side >= MIN_SIDE_COVERAGE) | (side < 0))
        on_border += side < 0
    ps, qs = np.nonzero(ok & (on_border <= 1))
    # evidence (covered minus uncovered side pixels) of the kept rectangles only
    evidence = np.zeros(len(ps), np.float32)
    for side, length in zip(sides, (width[0, qs], width[0, qs], height[ps, 0], height[ps, 0]), strict=True):
        at = side[ps, qs]
        evidence += length * (2 * at - 1) * (at >= 0)
    out: list[PixelBox] = []
    for k in np.argsort(-evidence, kind="stable"):
        p, q = ps[k], qs[k]
        box = (int(x0[q]) + 1, int(y0[p]) + 1, int(x1[q]) + 1, int(y1[p]) + 1)
        if all(box_iou(box, other) <= RECT_OVERLAP for other in out):
            out.append(box)
            if len(out) >= MAX_RECTS:
                break
    return out


def _line_pairs(lines: list[int], n: int, least: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (first, second) of the lines and the two borders at least ``least`` apart."""
    pos = np.unique(np.array(lines + [-1, n - 1]))
    i, j = np.triu_indices(len(pos), k=1)
    keep = pos[j] - pos[i] >= least
    return pos[i[keep]], pos[j[keep]]


def _edge_maps(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step edges between neighbouring rows (h-1, w) and columns (w-1, h, transposed), thinned
    to the strongest of three neighbouring steps."""

    def steps(d: np.ndarray) -> np.ndarray:  # max over RGB of the absolute differences
        return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])  # numpy reads the channels in place

    def thin(g: np.ndarray) -> np.ndarray:  # a step at least as strong as those above and below it
        strongest = cv2.dilate(g, _VERTICAL_3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return (g >= EDGE_STEP) & (g == strongest)

    # columns: differences taken in place, only the one-channel result transposed (cheaper than the RGB copy)
    across = cv2.transpose(np.ascontiguousarray(steps(cv2.absdiff(a[:, 1:], a[:, :-1]))))
    return thin(steps(cv2.absdiff(a[1:], a[:-1]))), thin(across)


_VERTICAL_3 = np.ones((3, 1), np.uint8)


def _lines(edges: np.ndarray, min_run: int) -> list[int]:
    """Indices of the lines holding runs of edge pixels at least ``min_run`` long, longest first."""
    closed = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_RECT, (RUN_GAP, 1)))
    # eroded by a min_run-long line, a run of length L >= min_run leaves L - min_run + 1 pixels
    # (and a shorter run none), in one piece: a line's total length of long runs is the pixels
    # left plus (min_run - 1) per piece
    left = cv2.erode(closed, np.ones((1, min_run), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    pieces = cv2.compare(left[:, 1:], left[:, :-1], cv2.CMP_GT) // 255
    total = (cv2.reduce(left, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
             + (min_run - 1) * (cv2.reduce(pieces, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0] + left[:, 0]))
    keep = np.flatnonzero(total > 0)
    return keep[np.argsort(-total[keep], kind="stable")][:MAX_LINES].tolist()


def _coverage(edges: np.ndarray, line: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Share of edge pixels on each ``line`` between pixels lo + 1 .. hi, for every line (rows) and
    every (lo, hi) pair (columns); -1 for lines on the image border."""
    lines, which = np.unique(np.clip(line, 0, n - 2), return_inverse=True)
    cum = np.zeros((len(lines), edges.shape[1] + 1), np.float32)  # cumulative sums of the lines used only
    np.cumsum(edges[lines], axis=1, dtype=np.float32, out=cum[:, 1:])
    rows = cum[which.reshape(-1)]
    share = (rows[:, hi + 1] - rows[:, lo + 1]) / np.maximum(1, hi - lo)[None, :]
    return np.where(((line < 0) | (line >= n - 1))[:, None], -1.0, share).astype(np.float32)

