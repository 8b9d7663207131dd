"""Near-duplicate groups across the whole collection (``imgsearch dupes``), as desktop duplicate
finders show them: each group with its best copy marked (largest pixel count, then largest file,
then the oldest).

Two images are near-duplicates at a level when their global pHashes are within ``phash`` bits
AND their PDQ hashes within ``pdq`` bits (PDQ, 256 bits, confirms: unrelated images whose
64-bit pHashes happen to be close are far apart in PDQ). Pairs are found by one SQL statement
(``dupe_pairs``: exact multi-index hashing on the images' pHash chunk indexes); groups are the
connected components of the pairs (union-find, linear in pairs). A group may chain: A~B and
B~C put A and C together even if A and C are further apart than the level allows.

The thresholds were chosen with ``bench/dupes_levels.py`` (docs/benchmarks.md, "Duplicate levels").
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from . import hamming
from .model import Hash
from .queries import query


@dataclass(frozen=True)
class Level:
    phash: int  # global pHash bits (of 64)
    pdq: int  # PDQ bits (of 256)


# bench/dupes_levels.py on the 644 pool images: share of edited copies grouped with their original,
# and unrelated pool pairs grouped (of 207,046):
#   strict: re-encoded / resized >= 0.97, light edits but 2% crops >= 0.93; 2 pairs (both recoloured
#           copies of the same clip art, arguably duplicates)
#   normal: also 2% crops 0.95, captions 0.69; the same 2 pairs
#   loose:  also captions 0.82, 3-degree rotations 0.61, 5% crops 0.28; 7 pairs (+5 look-alike star fields)
# The radius also sets the cost of the self-join (probes per image: 46 at 4 bits, 718 at 8, 3588 at 10).
LEVELS = {
    "strict": Level(phash=4, pdq=40),
    "normal": Level(phash=8, pdq=64),
    "loose": Level(phash=10, pdq=72),
}


@dataclass(frozen=True)
class Copy:
    id: int
    width: int
    height: int
    format: str
    file_size: int
    uris: tuple[str, ...]
    best: bool
    phash_bits: int  # from the group's best copy

    def to_json(self) -> dict:
        return {"id": self.id, "best": self.best, "width": self.width, "height": self.height, "format": self.format,
                "file_size": self.file_size, "phash_bits": self.phash_bits, "uris": list(self.uris)}


@dataclass(frozen=True)
class Group:
    copies: tuple[Copy, ...]  # the best first

    @property
    def best(self) -> Copy:
        return self.copies[0]

    def to_json(self) -> dict:
        return {"best": self.best.id, "size": len(self.copies), "images": [c.to_json() for c in self.copies]}


def pair_params(level: Level) -> dict:
    params: dict = {"radius": level.phash, "pdq_bits": level.pdq}
    for i, (bits, t) in enumerate(zip(hamming.CHUNK_BITS, hamming.chunk_radii(level.phash), strict=True)):
        params[f"m{i}"] = hamming.masks(bits, t).tolist() if t >= 0 else []
    return params


def _components(pairs) -> list[list[int]]:
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return list(groups.values())


def find_groups(conn: psycopg.Connection, level: str | Level = "normal") -> list[Group]:
    """Groups of near-duplicates, largest first; within a group the best copy first."""
    lv = LEVELS[level] if isinstance(level, str) else level
    with conn.cursor() as cur:
        cur.execute(query("dupe_pairs"), pair_params(lv))
        components = _components((row["a"], row["b"]) for row in cur)
    ids = [i for comp in components for i in comp]
    rows = {row["id"]: row for row in conn.execute(query("images_brief"), {"ids": ids})}
    conn.commit()
    groups = []
    for comp in components:
        members = sorted((rows[i] for i in comp if i in rows),
                         key=lambda r: (-r["width"] * r["height"], -r["file_size"], r["id"]))
        if len(members) < 2:  # deleted meanwhile
            continue
        best = Hash.from_bitstring(members[0]["phash"])
        groups.append(Group(tuple(
            Copy(r["id"], r["width"], r["height"], r["format"], r["file_size"], tuple(r["uris"]), n == 0,
                 best - Hash.from_bitstring(r["phash"]))
            for n, r in enumerate(members))))
    groups.sort(key=lambda g: (-len(g.copies), g.best.id))
    return groups
