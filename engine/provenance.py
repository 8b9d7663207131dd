"""Provenance: which stored image was cut, edited or composed from which.

Linking (``link``, ``link_pending``, ``relink``) matches a stored image against the collection,
reading the image's own fingerprint back from the database (no file is decoded again), and
stores every relation found as an edge from the source to the derived image (table ``edges``,
sql/migrations/0004_edges.sql; which side is the source: engine.relations). Each pair of images
is judged from both sides (when the first is linked, the second is not stored yet; a relink sees
both); an edge read again with a better score replaces the old one.

Answers (``lineage``, ``lineage_of_query``) walk the edges both ways, hiding those implied by
others (the view ``lineage_edges``), and return the JSON-ready tree that ``imgsearch lineage
--json`` prints and that ``GET /api/images/{id}/lineage`` serves.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from PIL import Image

from . import fanout, hashes, pdq
from . import keypoints as kpmod
from . import search as searchmod
from .errors import NotFoundError
from .fingerprint import QueryFingerprint
from .model import Fingerprint, Hash, Match, Region
from .queries import query
from .relations import Edge, ImageInfo, classify, encoding_quality, keeps_long, matching_points, pictures

LINK_LIMIT = 50  # matches considered per image (search verifies at most its MAX_VERIFY candidates)
# Candidates that share only visual words with the image are verified when their word score is
# worth at least this many votes of a word held by one image alone: on the provenance set, 82% of
# the candidates then skipped were all rejected by verification (bench/provenance.py).
LINK_WORD_VOTES = 1.2
DEFAULT_DEPTH = 10
PENDING_BATCH = 100


# --- reading a stored image back as a query ----------------------------------------------------

def stored_query(conn: psycopg.Connection, image_id: int) -> QueryFingerprint:
    """A stored image as a query: its stored hashes, regions and 500 keypoints; the 7 other
    rotations/flips of its pHash and PDQ come from its thumbnail (within a few bits of the full
    image's). No mirrored keypoints: mirrored copies are found by their hashes."""
    row = conn.execute(query("provenance_image"), {"id": image_id}).fetchone()
    if row is None:
        raise NotFoundError(f"no image with id {image_id}")
    regions = tuple(Region(kind, tuple(box), Hash.from_bitstring(h)) for kind, box, h in
                    zip(row["region_kinds"], row["region_boxes"], row["region_hashes"], strict=True))
    fp = Fingerprint(
        sha256=bytes(row["sha256"]), width=row["width"], height=row["height"], format=row["format"],
        file_size=row["file_size"], ahash=Hash.from_bitstring(row["ahash"]), dhash=Hash.from_bitstring(row["dhash"]),
        phash=Hash.from_bitstring(row["phash"]), pdq=Hash.from_bitstring(row["pdq"]), pdq_quality=row["pdq_quality"],
        regions=regions, keypoints=kpmod.from_bytes(row["keypoints"]) if row["keypoints"] else None,
    )
    phashes, pdqs = {"identity": fp.phash}, {"identity": fp.pdq}
    if row["thumbnail"]:
        with Image.open(io.BytesIO(row["thumbnail"])) as thumb:
            thumb = thumb.convert("RGB")
            ph, (pq, _) = hashes.phash_dihedral(thumb), pdq.pdq_dihedral(thumb)
        phashes = {name: phashes.get(name, ph[name]) for name in hashes.DIHEDRAL_NAMES}
        pdqs = {name: pdqs.get(name, pq[name]) for name in hashes.DIHEDRAL_NAMES}
    return QueryFingerprint(fp, phashes, pdqs, None)


def image_infos(conn: psycopg.Connection, ids) -> dict[int, ImageInfo]:
    """ImageInfo of stored images; encoding qualities not yet known are worked out and cached."""
    out = {}
    for row in conn.execute(query("provenance_infos"), {"ids": list(ids)}).fetchall():
        quality = row["quality"]
        if not row["known"]:
            quality = encoding_quality(row["format"], row["file_size"], row["metadata"], row["uris"])
            conn.execute(query("save_quality"), {"id": row["id"], "quality": quality})
        out[row["id"]] = ImageInfo(row["id"], row["width"], row["height"], quality, pictures(row["pictures"]),
                                   row["file_size"])
    return out


# --- linking -----------------------------------------------------------------------------------

def word_floor(conn: psycopg.Connection) -> float:
    """LINK_WORD_VOTES votes of a word held by one image, in the units of search's word scores
    (10 x idf, idf = ln(images / 2) + 0.1; 0 before the planner knows how many images there are)."""
    images = conn.execute(query("image_count_estimate")).fetchone()["images"]
    return LINK_WORD_VOTES * 10 * (math.log(images / 2) + 0.1) if images >= 2 else 0.0


def link_matches(conn: psycopg.Connection, q: QueryFingerprint, image_id: int) -> list[Match]:
    """engine.search.search for a stored image, with two differences: the image itself is left out,
    and a candidate found by visual words alone is verified only above ``word_floor`` (a link need
    not find what a user's query would, and verification is most of its cost). On a database
    scaled out over shards, the two reads run on every shard at once (engine/fanout.py)."""
    conn = fanout.reads(conn)
    candidates = searchmod.lookup(conn, q, searchmod.DEFAULT_RADIUS)
    fanout.require_complete(conn)
    candidates.pop(image_id, None)
    floor = word_floor(conn)
    kept = [c for c in candidates.values() if c.exact or c.hash_hits or c.shared_words >= floor]
    ranked = sorted(kept, key=searchmod.Candidate.rank_key)[:searchmod.MAX_VERIFY]
    if not ranked:
        return []
    details = {r["id"]: r for r in conn.execute(query("candidate_details"), {"ids": [c.image_id for c in ranked]})}
    fanout.require_complete(conn)
    judged = [(c, v) for c in ranked if c.image_id in details
              and (v := searchmod.judge(q, c, details[c.image_id])) is not None]
    return searchmod.matches_of(searchmod.confirmed(conn, q, judged, details), details)


def find_edges(conn: psycopg.Connection, me: ImageInfo, q: QueryFingerprint, matches: list[Match],
               infos: dict[int, ImageInfo]) -> list[Edge]:
    """Classify every match; where both images hold pictures inside them, look at where the
    matching keypoints lie first (one more verification, for collages only)."""
    both = [m.id for m in matches if m.id in infos and me.pictures and infos[m.id].pictures]
    stored_kp = {r["image_id"]: kpmod.from_bytes(r["data"])
                 for r in conn.execute(query("keypoints_of"), {"ids": both}).fetchall()} if both else {}
    edges = []
    for m in matches:
        if m.id not in infos:
            continue
        points = matching_points(q.fp.keypoints, stored_kp[m.id]) if m.id in stored_kp else None
        e = classify(me, m, infos[m.id], points)
        if e is not None:
            edges.append(e)
    return edges


def link(conn: psycopg.Connection, image_id: int, q: QueryFingerprint | None = None) -> list[Edge]:
    """Match one stored image against the collection and store its edges, in one transaction.

    ``q`` may be the image's query fingerprint when the caller has it (more keypoints, mirrored
    ones: a little more recall); by default the stored fingerprint is read back (``stored_query``).
    """
    with conn.transaction():
        q = q if q is not None else stored_query(conn, image_id)
        matches = link_matches(conn, q, image_id)
        infos = image_infos(conn, [image_id, *(m.id for m in matches)])
        me = infos[image_id]
        edges = find_edges(conn, me, q, matches, infos)
        for e in edges:
            conn.execute(query("upsert_edge"), e.row())
        conn.execute(query("mark_linked"), {"id": image_id, "quality": me.quality})
    return edges


@dataclass
class LinkSummary:
    linked: int = 0
    edges: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"linked": self.linked, "edges": self.edges, "seconds": round(self.seconds, 2),
                "ms_per_image": round(1000 * self.seconds / self.linked, 1) if self.linked else None}


def link_pending(conn: psycopg.Connection, progress: Callable[[int], None] | None = None,
                 workers: int = 1) -> LinkSummary:
    """Link every image not linked yet, in ingest order, each in its own transaction: an
    interrupted run resumes where it stopped. With ``workers`` > 1, images are linked in that
    many worker processes, each with its own connection (linking is CPU-bound: verification)."""
    summary = LinkSummary()
    started = time.perf_counter()
    conn.commit()
    after = 0
    while True:
        ids = [r["id"] for r in conn.execute(query("pending_links"), {"after": after, "limit": PENDING_BATCH})]
        conn.commit()
        if not ids:
            break
        if workers > 1 and len(ids) > 1:
            from .workpool import imap_unordered

            # a worker that dies on an image leaves it pending (None): the next run links it again
            results = imap_unordered(_link_in_worker, ids, workers, crashed=lambda _id: None)
        else:
            results = (_link_one(conn, image_id) for image_id in ids)
        for edges in results:
            if edges is not None:
                summary.edges += edges
                summary.linked += 1
            if progress is not None:
                progress(1)
        after = ids[-1]
    summary.seconds = time.perf_counter() - started
    return summary


def _link_one(conn: psycopg.Connection, image_id: int) -> int | None:
    """The number of edges stored for one image; None if it was deleted meanwhile."""
    try:
        return len(link(conn, image_id))
    except NotFoundError:
        return None


_worker_conn: psycopg.Connection | None = None


def _link_in_worker(image_id: int) -> int | None:
    """link() in a worker process, on that process's own connection (opened on first use)."""
    global _worker_conn
    if _worker_conn is None:
        import cv2

        from . import db

        cv2.setNumThreads(1)
        _worker_conn = db.connect(migrate_schema=False)
    return _link_one(_worker_conn, image_id)


def pending_count(conn: psycopg.Connection) -> int:
    return conn.execute(query("pending_count")).fetchone()["pending"]


def relink(conn: psycopg.Connection, progress: Callable[[int], None] | None = None, workers: int = 1) -> LinkSummary:
    """Forget every edge and link every image again (after a change of thresholds, say)."""
    with conn.transaction():
        conn.execute(query("reset_links"))
    return link_pending(conn, progress, workers)


# --- answers -----------------------------------------------------------------------------------

def _entry(row: dict, up: bool) -> dict:
    """One relative in a lineage tree. query_box: where the shared part lies in the image this entry
    hangs under; target_box: where in this relative. The transform always carries source pixels
    onto derived pixels."""
    e = Edge(row["source_id"], row["derived_id"], row["relation"], row["score"], tuple(row["source_box"]),
             tuple(row["derived_box"]), row["scale"], row["tx"], row["ty"], row["mirrored"], row["rotated"])
    return {"id": row["id"], "uri": row["uri"], "relation": e.relation, "score": e.score,
            "query_box": list(e.derived_box if up else e.source_box),
            "target_box": list(e.source_box if up else e.derived_box), "transform": e.transform()}


def _by_score(entry: dict) -> tuple:
    return (-entry["score"], entry["id"])


def _tree(rows: list[dict], up: bool) -> list[dict]:
    """Nest rows of a recursive walk (each with the path from the image to it) into a tree."""
    key = "ancestors" if up else "descendants"
    nodes: dict[tuple, dict] = {}
    top: list[dict] = []
    for row in sorted(rows, key=lambda r: len(r["path"])):
        path = tuple(row["path"])
        node = {**_entry(row, up), key: []}
        nodes[path] = node
        parent = nodes.get(path[:-1])
        (parent[key] if parent is not None else top).append(node)
    for node in nodes.values():
        node[key].sort(key=_by_score)
    top.sort(key=_by_score)
    return top


def lineage(conn: psycopg.Connection, image_id: int, depth: int = DEFAULT_DEPTH) -> dict:
    """What a stored image came from (ancestors, up to the originals) and what was made from it
    (descendants), nested to ``depth`` generations: the JSON of ``imgsearch lineage --json`` and of
    ``GET /api/images/{id}/lineage``."""
    head = conn.execute(query("image_header"), {"id": image_id}).fetchone()
    if head is None:
        raise NotFoundError(f"no image with id {image_id}")
    out = {"image": {"id": head["id"], "uri": head["uri"]}, "ancestors": [], "descendants": []}
    if depth > 0:
        out["ancestors"] = _tree(conn.execute(query("lineage_ancestors"), {"id": image_id, "depth": depth}).fetchall(),
                                 True)
        out["descendants"] = _tree(
            conn.execute(query("lineage_descendants"), {"id": image_id, "depth": depth}).fetchall(), False)
    return out


def _hidden(edges: list[Edge], among: dict[tuple[int, int], str], up: bool) -> set[int]:
    """The relatives of an unstored query that stored edges among them explain away (the triangle
    rule of the view lineage_edges, with the query as one corner)."""
    rel = {(e.source_id if up else e.derived_id): e.relation for e in edges}
    hidden = set()
    for (a, b), relation in among.items():  # a stored edge a -> b between two relatives
        if a not in rel or b not in rel:
            continue
        if up:  # a -> b -> query, and a -> query
            hidden.add(b if keeps_long(relation, rel[b], rel[a]) else a)
        elif not keeps_long(rel[a], relation, rel[b]):  # query -> a -> b, and query -> b
            hidden.add(b)
    return hidden


def lineage_of_query(conn: psycopg.Connection, q: QueryFingerprint, depth: int = DEFAULT_DEPTH,
                     uri: str | None = None, quality: int | None = None) -> dict:
    """The lineage of an image that may not be stored, from a search: the stored images it was made
    from and those made from it (each with its own lineage below), as ``lineage`` returns it."""
    stored = conn.execute(query("image_id_by_sha256"), {"sha256": q.fp.sha256}).fetchone()
    if stored is not None:
        return lineage(conn, stored["id"], depth)
    out = {"image": {"id": None, "uri": uri}, "ancestors": [], "descendants": []}
    if depth <= 0:
        return out
    matches = searchmod.search(conn, q, limit=LINK_LIMIT)
    infos = image_infos(conn, [m.id for m in matches])
    me = ImageInfo(None, q.fp.width, q.fp.height, quality,
                   pictures([r.box for r in q.fp.regions if r.kind == "picture"]), q.fp.file_size)
    edges = find_edges(conn, me, q, matches, infos)
    uris = {m.id: m.uri for m in matches}
    ids = [e.source_id or e.derived_id for e in edges]
    among = {(r["source_id"], r["derived_id"]): r["relation"]
             for r in conn.execute(query("edges_among"), {"ids": ids}).fetchall()}
    for up, key in ((True, "ancestors"), (False, "descendants")):
        mine = [e for e in edges if (e.derived_id is None) == up]
        hidden = _hidden(mine, among, up)
        for e in mine:
            other = e.source_id if up else e.derived_id
            if other in hidden:
                continue
            row = {**e.row(), "id": other, "uri": uris.get(other)}
            entry = _entry(row, up)
            entry[key] = lineage(conn, other, depth - 1)[key] if depth > 1 else []
            out[key].append(entry)
        out[key].sort(key=_by_score)
    return out
