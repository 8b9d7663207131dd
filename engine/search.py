"""Search: from a query fingerprint to explained, verified matches.

1. lookup   one SQL round trip: stored hashes within `radius` bits of any query hash (global
            pHash in 8 rotations/flips, region pHashes), images sharing visual words with the
            query's keypoints, and an exact copy by SHA-256.
2. group    the hits per stored image into evidence.
3. verify   every candidate must show one geometric relation: an exact copy; a global hash
            that PDQ confirms; region hashes that agree; or local features that RANSAC fits
            (engine.verify). Unconfirmed candidates are dropped: unrelated images must not match.
4. explain  relation, boxes and score (engine.explain).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import psycopg
from PIL import Image

from . import hamming, pdq, threads, wordvotes
from . import keypoints as kpmod
from . import verify as verifymod
from .explain import Explanation, Similarity, box_area, explain, from_boxes, mark_composites, score
from .fingerprint import QueryFingerprint
from .hashes import box_pixels
from .model import Box, Hash, Keypoints, Match
from .queries import query

FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
DEFAULT_RADIUS = 10  # pHash bits: a global pHash (in 8 rotations/flips) against stored global pHashes
# The 7 turned/mirrored variants of the query's global pHash: a flipped or turned copy sits 0-2
# bits from its source on the corpus (recoloured copies up to 6), and r = 8 probes 3.3x fewer
# index buckets than r = 10 (8.6k instead of 28.7k probes a query: docs/benchmarks.md).
TURNED_RADIUS = 8
REGION_RADIUS = 6  # pHash bits: every query hash against every stored region (docs/bench-index.md)
# Icon silhouettes and cut-outs vary more with the background they were flattened onto; they are
# few (about one of each per image), so a wider radius costs little (bench/regions.py).
KIND_RADIUS = {"shape": 8, "cutout": 8}
# PDQ (256 bits) this close, in the same turn, confirms a global pHash hit; no pHash hit is a copy
# without it: images of one kind (star fields: a bright round blob on black) share pHashes within
# 0-4 bits, often in another turn, where their PDQs are 58-116 bits apart; on both kit corpora the
# true copies within 4 bits are 22-48 apart, bar two turned icons (docs/benchmarks.md,
# "What PDQ must confirm")
PDQ_CONFIRM_BITS = 56
# A single textured face/picture region this close is proof enough (bench/regions.py: no wrong
# image within 6 bits of any query region on the corpus); silhouettes need a second agreeing hit
# unless (nearly) identical. Unless both are faces or silhouettes, the two parts a region hit
# matches must also agree by PDQ, or the hit does not count (confirm_parts): star fields' picture
# regions hash alike as their whole images do.
REGION_TRUSTED_BITS = {"face": 6, "picture": 6, "shape": 2, "cutout": 2}
MIN_PART_PX = 16  # confirm_parts: smaller parts (of the stored thumbnail, say) are not checked
WORD_CANDIDATES = 20  # images with the best visual-word scores that are verified (bench/keypoints.py)
MIN_WORD_SCORE = 1
STOP_WORD_SHARE = 0.02  # words in more than this share of the images are skipped ...
STOP_WORD_MIN = 20  # ... unless in fewer than this many
# postings a query reads at most, rarest words first: bounds the word scoring's cost as the
# collection grows (bench/search.py; docs/benchmarks.md)
WORD_POSTINGS = 40_000
WORD_DF_CAP = 400  # words with this many postings or more are skipped (they carry little idf)
MAX_VERIFY = 24  # at most this many candidates get feature verification per query
# Guided verification (engine.keypoints.extract_part): a fit with at least this many distinct
# inliers but fewer than verify.MIN_INLIERS, whose shared part covers less than GUIDE_MAX_AREA of
# the query, is tried again with that part of the query described on its own. At most
# GUIDE_PER_QUERY candidates a query (docs/benchmarks.md, "Guided verification").
GUIDE_MIN_DISTINCT = 5
GUIDE_MAX_AREA = 0.5
GUIDE_MARGIN = 0.1  # of the part's size, added on each side (ORB skips a border of 15 px)
GUIDE_PER_QUERY = 4
# Candidates ranked after the first SCREEN_FROM_RANK are verified after a screening pass
# (verify.screened): it skips the full matching of most unrelated candidates, but can reject a near
# fit that guided verification would accept. The two such crops on the kit's corpora ranked first,
# with word scores 2.5x the next; with the first 4 exempt, every query of both corpora finds the
# same sources as without screening (bench/screening.py; docs/benchmarks.md, "Screened verification").
SCREEN_FROM_RANK = 4


@dataclass(frozen=True)
class QueryHash:
    qno: int
    kind: str
    box: Box
    variant: str  # dihedral variant for global hashes, 'identity' for regions
    hash: Hash


@dataclass
class Candidate:
    image_id: int
    exact: bool = False
    hash_hits: list[tuple[QueryHash, str, Box, int]] = field(default_factory=list)  # (query, kind, box, bits)
    shared_words: int = 0  # the visual-word score (weak geometric consistency, x10)
    word_side: int | None = None  # which keypoints scored it: 0 the query's, 1 its mirror's

    @property
    def best_distance(self) -> int | None:
        return min((h[3] for h in self.hash_hits), default=None)

    def rank_key(self) -> tuple:
        return (not self.exact, self.best_distance if self.best_distance is not None else 99, -self.shared_words)


def query_hashes(q: QueryFingerprint) -> list[QueryHash]:
    out = [QueryHash(i, "global", FULL_BOX, variant, h) for i, (variant, h) in enumerate(q.phash_variants.items())]
    for region in q.fp.regions:
        out.append(QueryHash(len(out), region.kind, region.box, "identity", region.hash))
    return out


SELF_ONLY_KINDS = {"shape", "cutout"}  # silhouettes and cut-out objects: not comparable with photo pHashes


def _compatible(query_kind: str, stored_kind: str) -> bool:
    """Shapes and cut-outs only compare with their own kind; every other pHash with every other."""
    if query_kind in SELF_ONLY_KINDS or stored_kind in SELF_ONLY_KINDS:
        return query_kind == stored_kind
    return True


def lookup(conn: psycopg.Connection, q: QueryFingerprint, radius: int) -> dict[int, Candidate]:
    qhs = query_hashes(q)
    sides = [(side, kpmod.postings(kp, mirror=side == 1))
             for side, kp in enumerate((q.fp.keypoints, q.mirrored_keypoints)) if kp is not None and len(kp)]
    region_radii = [min(radius, KIND_RADIUS.get(h.kind, REGION_RADIUS)) for h in qhs]
    region_probes = hamming.probes([h.hash.value for h in qhs], region_radii)
    global_qhs = [h for h in qhs if h.kind == "global"]
    global_radii = [radius if h.variant == "identity" else min(radius, TURNED_RADIUS) for h in global_qhs]
    global_probes = hamming.probes([h.hash.value for h in global_qhs], global_radii)
    words = wordvotes.QueryWords.of(sides)
    # prepare=False: once psycopg prepares a statement run 5 times, PostgreSQL soon switches to a
    # generic plan, which for these array probes is 1.7x slower than planning each time (10 ms);
    # binary=True: the visual-word postings come back as array_send bytes (engine.wordvotes)
    rows = conn.execute(query("lookup"), {
        **region_probes.params("r"), **global_probes.params("g"), **words.params(),
        "stop_share": STOP_WORD_SHARE, "stop_min": STOP_WORD_MIN,
        "word_postings": WORD_POSTINGS, "df_cap": WORD_DF_CAP,
        "sha256": q.fp.sha256,
    }, prepare=False, binary=True).fetchall()
    candidates: dict[int, Candidate] = {}
    for best in wordvotes.scores((r for r in rows if r["source"] == "postings"), words, WORD_CANDIDATES,
                                 MIN_WORD_SCORE):
        cand = candidates.setdefault(best.image_id, Candidate(best.image_id))
        cand.shared_words, cand.word_side = best.score, best.side
    for row in rows:
        if row["source"] == "postings":
            continue
        cand = candidates.setdefault(row["image_id"], Candidate(row["image_id"]))
        if row["source"] == "sha":
            cand.exact = True
        else:
            qh = qhs[row["qno"]]
            if _compatible(qh.kind, row["kind"]):
                cand.hash_hits.append((qh, row["kind"], (row["x0"], row["y0"], row["x1"], row["y1"]), row["distance"]))
    return {k: c for k, c in candidates.items() if c.exact or c.hash_hits or c.shared_words}


def _px(box: Box, size: tuple[int, int]) -> Box:
    w, h = size
    return (box[0] * w, box[1] * h, box[2] * w, box[3] * h)


def _agreeing(sims: list[Similarity], stored_size: tuple[int, int]) -> tuple[Similarity, int]:
    """The similarity most others agree with (scale within 15%, offset within 5% of the image)."""
    tol = 0.05 * max(stored_size)
    best, best_n = sims[0], 0
    for s in sims:
        n = sum(1 for o in sims if o.mirrored == s.mirrored and abs(o.scale / s.scale - 1) < 0.15
                and abs(o.tx - s.tx) < tol and abs(o.ty - s.ty) < tol)
        if n > best_n:
            best, best_n = s, n
    return best, best_n


def _global_explanation(variant: str, identical: bool) -> Explanation:
    return Explanation("duplicate" if identical else "near_duplicate", FULL_BOX, FULL_BOX, 1.0, 1.0,
                       mirrored=variant.startswith("mirror"), rotated="rot" in variant)


@dataclass(frozen=True)
class Verdict:
    explanation: Explanation
    score: int
    distance: int | None
    evidence: tuple[str, ...]
    inliers: int | None = None
    # a verdict from region hashes: the region hits it was decided on, whose parts PDQ still
    # looks at (confirm_parts, with the stored thumbnail); empty for other verdicts
    regions: tuple = ()


def _sides_to_verify(q: QueryFingerprint, cand: Candidate, both_sides: bool = False) -> list:
    """The query's keypoints, plain and mirrored. A candidate found by visual words alone is
    verified on the side whose words found it, unless ``both_sides``: the other side's matches are
    what a reflection would leave, and verifying it too doubled the cost for nothing
    (docs/benchmarks.md)."""
    sides = [kp for kp in (q.fp.keypoints, q.mirrored_keypoints) if kp is not None]
    if cand.word_side is not None and not cand.hash_hits and len(sides) == 2 and not both_sides:
        return [sides[cand.word_side]]
    return sides


def _guided(q: QueryFingerprint, near: verifymod.Verification, mirrored: bool,
            stored_kp) -> tuple[verifymod.Verification, object] | None:
    """Verify again with the part of the query that ``near`` (a fit short of the threshold) maps
    onto the stored image, described on its own at the stored image's scale. The acceptance bar
    is the same; only the query's description of that part is denser."""
    x0, y0, x1, y1 = near.query_box
    mx, my = GUIDE_MARGIN * (x1 - x0), GUIDE_MARGIN * (y1 - y0)
    box = (max(0.0, x0 - mx), max(0.0, y0 - my), min(1.0, x1 + mx), min(1.0, y1 + my))
    zoom = min(2.0, max(0.5, near.transform.scale))
    part = kpmod.extract_part(q.working, box, zoom, mirror=mirrored)
    v = verifymod.verify(part, stored_kp)
    return (v, part) if v is not None and v.accepted else None


def _copy_verdict(q: QueryFingerprint, cand: Candidate, details: dict) -> Verdict | None:
    """0. the same bytes; 1. global <-> global: the whole query is a (transformed) copy of the
    whole stored image: a global pHash hit that PDQ confirms in the same turn (the closest such)."""
    if cand.exact:
        return Verdict(_global_explanation("identity", True), 100, 0, ("sha256",))
    globals_ = sorted((h for h in cand.hash_hits if h[0].kind == "global" and h[1] == "global"), key=lambda h: h[3])
    stored_pdq = Hash.from_bitstring(details["pdq"]) if globals_ else None
    for qh, _, _, bits in globals_:
        if q.pdq_variants[qh.variant] - stored_pdq <= PDQ_CONFIRM_BITS:
            return Verdict(_global_explanation(qh.variant, False), score(distance_bits=bits), bits, ("global", "pdq"))
    return None


FeatureChecks = tuple[Keypoints, list[tuple[Keypoints, verifymod.Verification | None]]]


def feature_checks(q: QueryFingerprint, cand: Candidate, details: dict,
                   both_sides: bool = False, screen: bool = False) -> FeatureChecks | None:
    """The stored keypoints, and the RANSAC fit of each side of the query to verify against them
    (None where nothing fits); None without keypoints on either side. ``screen``: use
    verify.screened (a cheaper rejection of unrelated pairs). The costly part of judging (~3 ms a
    side): search() runs it for all candidates at once, in threads."""
    if not details.get("keypoints") or q.fp.keypoints is None:
        return None
    stored_kp = kpmod.from_bytes(details["keypoints"])
    check = verifymod.screened if screen else verifymod.verify
    return stored_kp, [(kp, check(kp, stored_kp, min_inliers=GUIDE_MIN_DISTINCT))
                       for kp in _sides_to_verify(q, cand, both_sides)]


def judge(q: QueryFingerprint, cand: Candidate, details: dict, guided: list[int] | None = None,
          both_sides: bool = False, checks: FeatureChecks | None = None) -> Verdict | None:
    """Accept a candidate only on evidence of one geometric relation; None rejects it.

    ``guided``: a one-item counter of the guided verifications left for this query (none if None);
    ``both_sides``: verify a word-only candidate on the plain and the mirrored keypoints;
    ``checks``: ``feature_checks`` done already (they are done here otherwise). A verdict that
    rests on region hashes carries their hits in ``regions``: the caller, which can read the stored
    thumbnail, still checks it with :func:`confirm_parts`."""
    qsize = (q.fp.width, q.fp.height)
    ssize = (details["width"], details["height"])
    copy = _copy_verdict(q, cand, details)
    if copy is not None:
        return copy

    # 2. local features: RANSAC on the keypoints of both images
    if checks is None:
        checks = feature_checks(q, cand, details, both_sides)
    if checks is not None:
        stored_kp, fits = checks
        best, near = None, None
        for kp, v in fits:
            if v is None:
                continue
            if v.accepted and (best is None or v.distinct > best[0].distinct):
                best = (v, kp)
            elif not v.accepted and (near is None or v.distinct > near[0].distinct):
                near = (v, kp is q.mirrored_keypoints)
        if (best is None and near is not None and guided and guided[0] > 0 and q.working is not None
                and box_area(near[0].query_box) < GUIDE_MAX_AREA):
            guided[0] -= 1
            best = _guided(q, near[0], near[1], stored_kp)
        if best is not None:
            v, kp = best
            t = v.transform
            e = explain(kp.size, stored_kp.size, Similarity(t.scale, t.rotation, t.mirrored, t.tx, t.ty))
            kinds = sorted({h[1] for h in cand.hash_hits if h[3] <= DEFAULT_RADIUS})
            return Verdict(e, score(inliers=v.inliers, distance_bits=cand.best_distance), cand.best_distance,
                           ("keypoints", *kinds), v.inliers)

    # 3. region hashes that agree on one geometry, or one close textured region
    return region_verdict([h for h in cand.hash_hits if not (h[0].kind == "global" and h[1] == "global")],
                          qsize, ssize)


def region_verdict(region_hits: list, qsize: tuple[int, int], ssize: tuple[int, int]) -> Verdict | None:
    """Region hits (query hash, stored kind, stored box, bits) that show one relation: two or more
    that agree on one geometry, or one close enough to be trusted alone; None otherwise."""
    if not region_hits:
        return None
    # one hit per pair of regions (the closest): the whole query's 8 turns are one region, and
    # two of its turns on one stored region are not two regions that agree
    pairs = list({(h[0].kind, h[0].box, h[1], h[2]): h for h in sorted(region_hits, key=lambda h: -h[3])}.values())
    sims = [from_boxes(_px(qh.box, qsize), _px(sbox, ssize)) for qh, _, sbox, _ in pairs]
    sim, n = _agreeing(sims, ssize)
    trusted = [h for h in region_hits if h[3] <= REGION_TRUSTED_BITS.get(_region_kind(h), -1)]
    if n < 2 and not trusted:
        return None
    bits = min(h[3] for h in region_hits)
    kinds = tuple(sorted({_region_kind(h) for h in region_hits}))
    return Verdict(explain(qsize, ssize, sim), score(distance_bits=bits, agreeing_regions=n), bits, kinds,
                   regions=tuple(region_hits))


def _region_kind(hit) -> str:
    """The kind of region a region hit is about: the query's, or the stored region's when the
    whole query (its global hash) matched a stored region."""
    return hit[1] if hit[0].kind == "global" else hit[0].kind


def _part_check_needed(hit) -> bool:
    """Whether a trusted region hit needs its parts compared by PDQ: not two faces (the face
    detector found both), not silhouettes (their own kinds, with their own rules)."""
    qkind, skind = hit[0].kind, hit[1]
    if qkind in SELF_ONLY_KINDS or skind in SELF_ONLY_KINDS:
        return False
    return not (qkind == "face" and skind == "face")


def _part_pdq(pixels: Image.Image, box: Box) -> Hash | None:
    x0, y0, x1, y1 = box_pixels(box, pixels.size)
    if min(x1 - x0, y1 - y0) < MIN_PART_PX:
        return None
    return pdq.pdq_hash(pixels.crop((x0, y0, x1, y1)))[0]


def confirm_parts(q: QueryFingerprint, verdict: Verdict, details: dict, thumbnail: bytes | None) -> Verdict | None:
    """The verdict that stands once PDQ has looked at the parts its region hits match (None: none).

    A region hit (not two faces, not silhouettes: :func:`_part_check_needed`) whose two parts both
    have PDQs more than PDQ_CONFIRM_BITS apart does not count, and the verdict is decided again on
    the other hits (:func:`region_verdict`). The query's part: its PDQ in that turn if it is the
    whole query, else a PDQ of the part of its working image; the stored part: the stored PDQ if it
    is the whole image, else a PDQ of the part of its ``thumbnail`` (JPEG bytes). A part that
    cannot be seen (a query without pixels, made from a stored fingerprint; no thumbnail, or one
    that does not decode; under MIN_PART_PX) leaves its hit counting. Measured: docs/benchmarks.md,
    "What PDQ must confirm"."""
    checked = [h for h in verdict.regions if _part_check_needed(h)]
    if not checked:
        return verdict
    working = Image.fromarray(q.working) if q.working is not None else None
    thumb = _decoded(thumbnail) if any(skind != "global" for _, skind, _, _ in checked) else None
    failed = []
    for hit in checked:
        qh, skind, sbox, _ = hit
        if qh.kind == "global":
            qpart = q.pdq_variants.get(qh.variant)
        else:
            qpart = _part_pdq(working, qh.box) if working is not None else None
        if skind == "global":
            spart = Hash.from_bitstring(details["pdq"])
        else:
            spart = _part_pdq(thumb, sbox) if thumb is not None else None
        if qpart is not None and spart is not None and qpart - spart > PDQ_CONFIRM_BITS:
            failed.append(hit)
    if not failed:
        return verdict
    return region_verdict([h for h in verdict.regions if h not in failed], (q.fp.width, q.fp.height),
                          (details["width"], details["height"]))


def _decoded(thumbnail: bytes | None) -> Image.Image | None:
    """A stored thumbnail as RGB; None without one, or for bytes that are not an image we wrote."""
    if thumbnail is None:
        return None
    try:
        with Image.open(io.BytesIO(thumbnail)) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError):
        return None


def confirmed(conn: psycopg.Connection, q: QueryFingerprint, judged: list[tuple[Candidate, Verdict]],
              details: dict[int, dict]) -> list[tuple[Candidate, Verdict]]:
    """The judged candidates whose verdicts stand, as they stand: those resting on region hashes
    as :func:`confirm_parts` leaves them, with the stored thumbnails read for them alone."""
    pending = [cand.image_id for cand, v in judged if any(_part_check_needed(h) for h in v.regions)]
    if not pending:
        return judged
    thumbnails = {r["id"]: bytes(r["thumbnail"])
                  for r in conn.execute(query("thumbnails_by_id"), {"ids": pending}).fetchall()}
    out = []
    for cand, v in judged:
        if v.regions:
            v = confirm_parts(q, v, details[cand.image_id], thumbnails.get(cand.image_id))
        if v is not None:
            out.append((cand, v))
    return out


def search(conn: psycopg.Connection, q: QueryFingerprint, *, limit: int = 10, min_score: int = 0,
           radius: int = DEFAULT_RADIUS, stats: dict | None = None) -> list[Match]:
    """Verified, explained matches, best first. ``stats``, if given, receives seconds per stage
    ('lookup', 'details', 'verify') and the number of candidates found and verified."""
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        if stats is not None:
            stats[stage] = stats.get(stage, 0.0) + now - clock
        clock = now

    candidates = lookup(conn, q, radius)
    lap("lookup")
    ranked = sorted(candidates.values(), key=Candidate.rank_key)[:MAX_VERIFY]
    if stats is not None:
        stats.update(candidates=len(candidates), verified=len(ranked))
    if not ranked:
        return []
    rows = conn.execute(query("candidate_details"), {"ids": [c.image_id for c in ranked]}).fetchall()
    details = {row["id"]: row for row in rows}
    lap("details")
    judged: list[tuple[Candidate, Verdict]] = []
    guided = [GUIDE_PER_QUERY]
    # Which side's words found a candidate means little when the collection is small (every
    # word's idf is at its floor: the demo's 8 images tie at one score on both sides); then the
    # words return fewer candidates than asked, and both sides of each cost no more verifications
    # than one side of WORD_CANDIDATES would.
    word_only = sum(1 for c in ranked if c.word_side is not None and not c.hash_hits)
    both_sides = 2 * word_only <= WORD_CANDIDATES
    ranked = [c for c in ranked if c.image_id in details]
    # the feature checks of every candidate that is no copy, at once, in threads (OpenCV's matcher
    # and numpy's large array operations release the GIL); then judged in rank order as before
    costly = [c for c in ranked if _copy_verdict(q, c, details[c.image_id]) is None]
    screen = {c.image_id for c in ranked[SCREEN_FROM_RANK:]}
    checks = dict(zip((c.image_id for c in costly),
                      threads.map_in_threads(lambda c: feature_checks(q, c, details[c.image_id], both_sides,
                                                                      screen=c.image_id in screen), costly),
                      strict=True))
    for cand in ranked:
        verdict = judge(q, cand, details[cand.image_id], guided, both_sides, checks.get(cand.image_id))
        if verdict is not None:
            judged.append((cand, verdict))
    judged = confirmed(conn, q, judged, details)
    lap("verify")
    matches = [m for m in matches_of(judged, details) if m.score >= min_score]
    matches.sort(key=lambda m: (-m.score, m.id))
    return matches[:limit]


def matches_of(judged: list[tuple[Candidate, Verdict]], details: dict) -> list[Match]:
    """Confirmed verdicts as matches, in the order given (a stored image whose picture sits in one
    part of the query is a 'composite' part when another one sits in a different part)."""
    explanations = mark_composites([v.explanation for _, v in judged])
    matches = []
    for (cand, v), e in zip(judged, explanations, strict=True):
        d = details[cand.image_id]
        uris = tuple(d["uris"] or ())
        matches.append(Match(
            id=cand.image_id, uri=uris[0] if uris else None, uris=uris, score=v.score, relation=e.relation,
            distance=v.distance, query_box=e.query_box, target_box=e.target_box, mirrored=e.mirrored,
            rotated=e.rotated, evidence=v.evidence, inliers=v.inliers, width=d["width"], height=d["height"],
        ))
    return matches
