"""Visual-word votes: which stored images share the query's words in one geometric relation.

Weak geometric consistency (Jegou, Douze and Schmid, 2008): every stored keypoint that shares a
visual word with a query keypoint votes, weighted by the word's idf, for the change of
orientation and scale between the two. A true match piles its votes into one (turn, zoom) bin;
chance matches spread over all of them. A candidate's score is its best bin.

The look-up (``sql/queries.sql``) returns the postings of the query's kept words as two arrays
(``pgarrays.from_binary``): grouping ~80k votes in SQL took ~220 ms at 100k images, here a few
ms. The bins are the ones the SQL used (docs/benchmarks.md): per image, side (0 the query's
keypoints, 1 their mirror's), grid shift (two grids offset by half a bin), turn (8 of 45
degrees) and zoom (40 steps of two pyramid levels); a word votes once per bin whatever the
number of its keypoints there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import keypoints as kpmod
from .pgarrays import Int2Array, Int4Array, from_binary

TURNS, ZOOMS, SHIFTS, SIDES = 8, 40, 2, 2
BINS_PER_SIDE = SHIFTS * TURNS * ZOOMS  # 640
BINS_PER_IMAGE = SIDES * BINS_PER_SIDE  # 1280
IDF_FLOOR = 0.1  # added to every idf: in a small collection every word still counts a little


@dataclass(frozen=True, eq=False)
class QueryWords:
    """The query's keypoints as words, each with its angle (0-255), level and side."""

    word: np.ndarray  # int32
    angle: np.ndarray  # int16
    level: np.ndarray  # int16
    side: np.ndarray  # int16: 0 the query's keypoints, 1 their mirror's

    @classmethod
    def of(cls, sides: Sequence[tuple[int, kpmod.Postings]]) -> QueryWords:
        def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        return cls(joined([p.word for _, p in sides], np.int32), joined([p.angle for _, p in sides], np.int16),
                   joined([p.level for _, p in sides], np.int16),
                   joined([np.full(len(p.word), s) for s, p in sides], np.int16))

    def params(self) -> dict[str, Int4Array | Int2Array]:
        return {"words": Int4Array(self.word), "angles": Int2Array(self.angle), "levels": Int2Array(self.level),
                "sides": Int2Array(self.side)}


@dataclass(frozen=True)
class WordScore:
    image_id: int
    side: int  # which of the query's keypoints scored it: 0 plain, 1 mirrored
    score: int  # the best bin's summed idf, x10


def idf(postings: np.ndarray, images: float) -> np.ndarray:
    """ln(N / (df + 1)) + IDF_FLOOR, with N at least df + 1, computed in single precision first
    as the SQL did (ties between candidates then break the same way)."""
    d1 = (np.asarray(postings) + 1).astype(np.float32)
    return np.log((np.maximum(np.float32(images), d1) / d1).astype(np.float64)) + IDF_FLOOR


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_id, angle, level) from the look-up's packed keys: image_id << 24 | angle << 16 |
    (level + 32768)."""
    keys = np.asarray(keys, np.int64)
    return keys >> 24, (keys >> 16) & 0xFF, (keys & 0xFFFF) - 32768


def vote(query: QueryWords, kept_words: np.ndarray, kept_df: np.ndarray, images: float,
         posting_words: np.ndarray, posting_keys: np.ndarray, min_score: float, limit: int) -> list[WordScore]:
    """The ``limit`` stored images with the best bins, best first (ties by image id), of those whose
    best bin reaches ``min_score`` (unscaled idf)."""
    order = np.argsort(kept_words)
    kept_words = np.asarray(kept_words, np.int64)[order]
    weights = idf(np.asarray(kept_df)[order], images)
    if not len(kept_words) or not len(posting_words):
        return []
    # the query's keypoints whose word was kept, sorted by word, with their word's index in kept
    at = np.minimum(np.searchsorted(kept_words, query.word), len(kept_words) - 1)
    rows = np.flatnonzero(kept_words[at] == query.word)
    rows = rows[np.argsort(query.word[rows], kind="stable")]
    row_words, row_kept = query.word[rows], at[rows]
    # each posting meets every query keypoint of its word
    lo = np.searchsorted(row_words, posting_words, "left")
    n = np.searchsorted(row_words, posting_words, "right") - lo
    posting = np.repeat(np.arange(len(posting_words)), n)
    row = np.arange(len(posting)) + np.repeat(lo - (np.cumsum(n) - n), n)
    image, angle, level = unpack(np.asarray(posting_keys)[posting])
    qrow = rows[row]
    turn_base = angle - query.angle[qrow]
    zoom_base = level - query.level[qrow] + 64
    side_base = image * SIDES + query.side[qrow]
    word_bits = max(1, int(len(kept_words)).bit_length())
    keys = []
    for shift in range(SHIFTS):
        b = ((side_base * SHIFTS + shift) * (TURNS * ZOOMS) + (((turn_base + 16 * shift) & 255) >> 5) * ZOOMS
             + np.clip((zoom_base + 2 * shift) >> 2, 0, ZOOMS - 1))
        keys.append((b << word_bits) | row_kept[row])
    # one vote per (bin, word): sorted, duplicates dropped (np.unique's hash table is 4x slower here)
    keys = np.concatenate(keys)
    keys.sort()
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    bins = keys >> word_bits
    w = weights[keys & ((1 << word_bits) - 1)]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    bins, score = bins[starts], np.add.reduceat(w, starts)
    keep = score >= min_score
    bins, score = bins[keep], score[keep]
    if not len(bins):
        return []
    images_of = bins // BINS_PER_IMAGE
    first = np.flatnonzero(np.r_[True, images_of[1:] != images_of[:-1]])  # each image's bins: first[i]:end[i]
    end = np.r_[first[1:], len(bins)]
    best = np.maximum.reduceat(score, first)
    out = []
    for i in np.lexsort((images_of[first], -best))[:limit]:
        top_bin = bins[first[i] + int(np.argmax(score[first[i]:end[i]]))]
        out.append(WordScore(int(images_of[first[i]]), int(top_bin // BINS_PER_SIDE % SIDES),
                             int(np.rint(best[i] * 10))))
    return out


def scores(rows: Iterable[dict], query: QueryWords, limit: int, min_score: float) -> list[WordScore]:
    """The ``limit`` best candidates over the look-up's 'postings' rows (one per server: each
    shard's words weigh with its own frequencies, as its own SQL did)."""
    out: list[WordScore] = []
    for row in rows:
        out += vote(query, from_binary(row["kept_words"]), from_binary(row["kept_df"]), row["images"],
                    from_binary(row["posting_words"]), from_binary(row["posting_keys"]), min_score, limit)
    out.sort(key=lambda s: (-s.score, s.image_id))
    return out[:limit]
