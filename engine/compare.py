"""Compare two images directly, by the rules a search applies to one candidate.

``compare(a, b)`` takes the query fingerprint of one image and the stored-side fingerprint of the
other and answers as a search of ``a`` would about ``b`` if ``b`` were stored and had been
retrieved: the hash hits that the SQL look-up would return (same radii, same kind rules) are
found here in memory, then ``engine.search.judge`` decides and explains. No database.

``stored_query(record, regions)`` is the reverse: a query fingerprint rebuilt from what the
database holds about a stored image (its pHash, PDQ, regions and 500 keypoints), so a stored
image can be searched with without its file. It has only the identity variant of the hashes and
no mirrored keypoints, so it finds copies in the same orientation, crops and composites, but
not mirrored or rotated copies unless their regions or keypoints match anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import keypoints as kpmod
from .explain import mark_composites
from .fingerprint import QueryFingerprint
from .model import Box, Fingerprint, Hash, Region
from .search import (
    DEFAULT_RADIUS,
    FULL_BOX,
    KIND_RADIUS,
    REGION_RADIUS,
    Candidate,
    _compatible,
    confirm_parts,
    judge,
    query_hashes,
)


@dataclass(frozen=True)
class Comparison:
    related: bool
    score: int = 0
    relation: str | None = None
    mirrored: bool = False
    rotated: bool = False
    distance: int | None = None
    inliers: int | None = None
    evidence: tuple[str, ...] = ()
    a_box: Box | None = None  # where the shared content lies in a (fractions)
    b_box: Box | None = None  # ... and in b

    def to_json(self) -> dict:
        return {"related": self.related, "score": self.score, "relation": self.relation,
                "mirrored": self.mirrored, "rotated": self.rotated, "distance": self.distance,
                "inliers": self.inliers, "evidence": list(self.evidence),
                "a_box": list(self.a_box) if self.a_box else None, "b_box": list(self.b_box) if self.b_box else None}


def hash_hits(a: QueryFingerprint, b: Fingerprint, radius: int = DEFAULT_RADIUS) -> Candidate:
    """The candidate the look-up would build for b: global pHash against global pHash within
    ``radius``; any other pair within the query hash kind's region radius; incompatible kinds skipped."""
    cand = Candidate(0, exact=a.fp.sha256 == b.sha256)
    stored: list[tuple[str, Box, Hash]] = [("global", FULL_BOX, b.phash)]
    stored += [(r.kind, r.box, r.hash) for r in b.regions]
    for qh in query_hashes(a):
        for kind, box, h in stored:
            if qh.kind == "global" and kind == "global":
                limit = radius
            else:
                limit = min(radius, KIND_RADIUS.get(qh.kind, REGION_RADIUS))
            bits = qh.hash - h
            if bits <= limit and _compatible(qh.kind, kind):
                cand.hash_hits.append((qh, kind, box, bits))
    return cand


def compare(a: QueryFingerprint, b: Fingerprint, radius: int = DEFAULT_RADIUS) -> Comparison:
    cand = hash_hits(a, b, radius)
    details = {"width": b.width, "height": b.height, "pdq": b.pdq.bitstring(),
               "keypoints": kpmod.to_bytes(b.keypoints) if b.keypoints is not None and len(b.keypoints) else None}
    verdict = judge(a, cand, details)
    if verdict is not None:
        verdict = confirm_parts(a, verdict, details, b.thumbnail)
    if verdict is None:
        return Comparison(False)
    e = mark_composites([verdict.explanation])[0]
    return Comparison(True, verdict.score, e.relation, e.mirrored, e.rotated, verdict.distance, verdict.inliers,
                      verdict.evidence, e.query_box, e.target_box)


def stored_fingerprint(record: dict, regions: list[dict]) -> Fingerprint:
    """A Fingerprint from an ``image_record`` row and its ``image_region_list`` rows."""
    return Fingerprint(
        sha256=bytes(record["sha256"]), width=record["width"], height=record["height"], format=record["format"],
        file_size=record["file_size"], ahash=Hash.from_bitstring(record["ahash"]),
        dhash=Hash.from_bitstring(record["dhash"]), phash=Hash.from_bitstring(record["phash"]),
        pdq=Hash.from_bitstring(record["pdq"]), pdq_quality=record["pdq_quality"],
        regions=tuple(Region(r["kind"], (r["x0"], r["y0"], r["x1"], r["y1"]), Hash.from_bitstring(r["hash"]))
                      for r in regions),
        keypoints=kpmod.from_bytes(bytes(record["keypoints"])) if record.get("keypoints") else None,
    )


def stored_query(record: dict, regions: list[dict]) -> QueryFingerprint:
    fp = stored_fingerprint(record, regions)
    return QueryFingerprint(fp, {"identity": fp.phash}, {"identity": fp.pdq}, None)
