"""The blocking work behind the API: fingerprints (CPU) and SQL (a psycopg connection pool).

Every method here is synchronous and runs in a worker thread (``api.py`` hands it to
``anyio.to_thread``); results are plain JSON-ready dicts. Links are relative to the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from .. import db, embedding, fanout, provenance, similar
from ..compare import compare, stored_query
from ..config import Settings
from ..errors import ImgsearchError, NotFoundError
from ..fingerprint import QueryFingerprint, fingerprint, query_fingerprint
from ..model import Fingerprint, Hash, Match
from ..queries import query
from ..store import delete, store
from .metrics import Metrics

MAX_IMAGE_ID = 2**63 - 1


def links(image_id: int) -> dict:
    return {"image": f"/api/images/{image_id}", "thumbnail": f"/api/images/{image_id}/thumbnail",
            "matches": f"/api/images/{image_id}/matches", "page": f"/images/{image_id}"}


def match_json(m: Match | similar.SimilarImage) -> dict:
    """A search match or a similar image as its CLI JSON, plus its thumbnail and links."""
    return {**m.to_json(), "thumbnail": f"/api/images/{m.id}/thumbnail", "links": links(m.id)}


def _hex(bitstring: str) -> str:
    return Hash.from_bitstring(bitstring).hex()


def _summary(row: dict) -> dict:
    return {"id": row["id"], "sha256": bytes(row["sha256"]).hex(), "width": row["width"], "height": row["height"],
            "format": row["format"], "file_size": row["file_size"], "metadata": row["metadata"],
            "created_at": row["created_at"].isoformat(), "uri": row["uri"], "links": links(row["id"])}


def check_id(image_id: int) -> int:
    if not 0 < image_id <= MAX_IMAGE_ID:
        raise NotFoundError(f"no image with id {image_id}")
    return image_id


@dataclass
class Service:
    settings: Settings
    pool: ConnectionPool
    metrics: Metrics

    def _timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.metrics.stage.observe(now - started, stage)
        return now

    # --- reads ------------------------------------------------------------------------------
    def ping(self, timeout: float = 5.0) -> None:
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute(query("ping")).fetchone()

    # CPU: the fingerprint functions. OpenCV's face detector is one object per process and is not
    # safe to run from two threads at once (its scale data is shared), so api.py runs these one at
    # a time per process (FINGERPRINTS); serve --workers N runs N processes for more.
    def query_fingerprint(self, data: bytes, name: str) -> tuple[QueryFingerprint, float]:
        t0 = time.perf_counter()
        q = query_fingerprint(data, name=name, settings=self.settings)
        return q, self._timed("query_fingerprint", t0) - t0

    def fingerprint(self, data: bytes, name: str) -> Fingerprint:
        """The fingerprint of an image to store (with its embedding when the 'semantic' extra is on)."""
        t0 = time.perf_counter()
        fp = fingerprint(data, name=name, settings=self.settings,
                         with_embedding=self.settings.semantic and embedding.available())
        self._timed("fingerprint", t0)
        return fp

    def search(self, q: QueryFingerprint, name: str, *, limit: int, min_score: int, fingerprint_s: float) -> dict:
        t0 = time.perf_counter()
        with self.pool.connection() as conn:
            outcome = fanout.search(conn, q, limit=limit, min_score=min_score)
        t1 = self._timed("search", t0)
        matches = outcome.matches
        return {**outcome.to_json(), "query": name, "query_image": {"sha256": q.fp.sha256.hex(), "width": q.fp.width,
                                               "height": q.fp.height, "format": q.fp.format},
                "matches": [match_json(m) for m in matches],
                "timings_ms": {"fingerprint": round(fingerprint_s * 1000, 1), "search": round((t1 - t0) * 1000, 1)}}

    def search_stored(self, image_id: int, *, limit: int, min_score: int) -> dict:
        """Search with a stored image (its stored hashes and keypoints, no file): its matches."""
        t0 = time.perf_counter()
        with self.pool.connection() as conn:
            record, regions = self._record(conn, image_id)
            q = stored_query(record, regions)
            outcome = fanout.search(conn, q, limit=limit + 1, min_score=min_score)
        t1 = self._timed("search_stored", t0)
        matches = [m for m in outcome.matches if m.id != image_id][:limit]
        return {**outcome.to_json(), "query": f"/api/images/{image_id}", "query_image": {
                    "id": image_id, "sha256": bytes(record["sha256"]).hex(), "width": record["width"],
                    "height": record["height"], "format": record["format"], "links": links(image_id)},
                "matches": [match_json(m) for m in matches],
                "timings_ms": {"fingerprint": 0.0, "search": round((t1 - t0) * 1000, 1)}}

    # --- similar images (the optional 'semantic' extra: FeatureUnavailableError, 501, without it) ------
    def similar_query_vector(self, data: bytes, name: str) -> tuple[object, float]:
        """CPU: the embedding of a query image (run one at a time per process, as fingerprints)."""
        t0 = time.perf_counter()
        vector = similar.query_vector(data, name=name, settings=self.settings)
        return vector, self._timed("similar_embedding", t0) - t0

    def similar(self, vector, name: str, *, limit: int, embedding_s: float) -> dict:
        t0 = time.perf_counter()
        with self.pool.connection() as conn:
            found = similar.nearest(conn, vector, limit)
        t1 = self._timed("similar_search", t0)
        return {"query": name, "matches": [match_json(m) for m in found],
                "timings_ms": {"embedding": round(embedding_s * 1000, 1), "search": round((t1 - t0) * 1000, 1)}}

    def similar_stored(self, image_id: int, *, limit: int) -> dict:
        embedding.require()
        t0 = time.perf_counter()
        with self.pool.connection() as conn:
            found = similar.similar_to_stored(conn, check_id(image_id), limit)
        t1 = self._timed("similar_search", t0)
        return {"query": f"/api/images/{image_id}", "query_image": {"id": image_id, "links": links(image_id)},
                "matches": [match_json(m) for m in found],
                "timings_ms": {"embedding": 0.0, "search": round((t1 - t0) * 1000, 1)}}

    @staticmethod
    def _record(conn, image_id: int) -> tuple[dict, list[dict]]:
        record = conn.execute(query("image_record"), {"id": check_id(image_id)}).fetchone()
        if record is None:
            raise NotFoundError(f"no image with id {image_id}")
        regions = conn.execute(query("image_region_list"), {"id": image_id}).fetchall()
        return record, regions

    def image(self, image_id: int) -> dict:
        with self.pool.connection() as conn:
            record, regions = self._record(conn, image_id)
            uris = conn.execute(query("image_uri_list"), {"id": image_id}).fetchall()
        keypoints = stored_query(record, []).fp.keypoints
        return {
            "id": record["id"], "sha256": bytes(record["sha256"]).hex(), "width": record["width"],
            "height": record["height"], "format": record["format"], "file_size": record["file_size"],
            "metadata": record["metadata"], "created_at": record["created_at"].isoformat(),
            "hashes": {"ahash": _hex(record["ahash"]), "dhash": _hex(record["dhash"]), "phash": _hex(record["phash"]),
                       "pdq": _hex(record["pdq"]), "pdq_quality": record["pdq_quality"]},
            "regions": [{"kind": r["kind"], "box": [r["x0"], r["y0"], r["x1"], r["y1"]], "phash": _hex(r["hash"])}
                        for r in regions],
            "keypoints": len(keypoints) if keypoints is not None else 0,
            "uris": [{"uri": u["uri"], "first_seen": u["first_seen"].isoformat()} for u in uris],
            "has_thumbnail": record["has_thumbnail"],
            "links": links(record["id"]),
        }

    def lineage(self, image_id: int, depth: int) -> dict:
        """What the image was made from and what was made from it: engine.provenance.lineage as is."""
        t0 = time.perf_counter()
        with self.pool.connection() as conn:
            tree = provenance.lineage(conn, check_id(image_id), depth)
        self._timed("lineage", t0)
        return tree

    def thumbnail(self, image_id: int) -> tuple[bytes, str]:
        with self.pool.connection() as conn:
            row = conn.execute(query("image_thumbnail"), {"id": check_id(image_id)}).fetchone()
        if row is None:
            raise NotFoundError(f"no image with id {image_id}")
        if row["thumbnail"] is None:
            raise NotFoundError(f"image {image_id} has no thumbnail")
        return bytes(row["thumbnail"]), bytes(row["sha256"]).hex()

    def list_images(self, *, after: int, limit: int, metadata: dict | None) -> list[dict]:
        with self.pool.connection() as conn:
            if metadata:
                rows = conn.execute(query("list_images_by_metadata"),
                                    {"after": after, "limit": limit, "metadata": Jsonb(metadata)}).fetchall()
            else:
                rows = conn.execute(query("list_images"), {"after": after, "limit": limit}).fetchall()
        return [_summary(r) for r in rows]

    def random_image(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(query("random_image")).fetchone() or conn.execute(query("first_image")).fetchone()
        if row is None:
            raise NotFoundError("no image with a thumbnail is stored yet")
        return row["id"]

    def stats(self) -> dict:
        with self.pool.connection() as conn:
            info = db.status(conn)
        missing = embedding.missing()
        similar_images = {"available": missing is None, "enabled": missing is None and self.settings.semantic,
                          "message": f"{embedding.INSTALL_HINT}; {missing}" if missing else None}
        return {**info, "pool": self.pool.get_stats(), "similar": similar_images}

    def fingerprint_pair(self, a: bytes, a_name: str, b: bytes, b_name: str) -> tuple[QueryFingerprint, Fingerprint]:
        t0 = time.perf_counter()
        pair = query_fingerprint(a, name=a_name, settings=self.settings), fingerprint(b, name=b_name,
                                                                                      settings=self.settings)
        self._timed("compare_fingerprints", t0)
        return pair

    @staticmethod
    def compare(qa: QueryFingerprint, fb: Fingerprint) -> dict:
        side = {"a": qa.fp, "b": fb}
        return {**compare(qa, fb).to_json(),
                **{k: {"sha256": f.sha256.hex(), "width": f.width, "height": f.height, "format": f.format}
                   for k, f in side.items()}}

    # --- writes -----------------------------------------------------------------------------
    def add(self, fp: Fingerprint, *, uri: str | None, metadata: dict) -> dict:
        t1 = time.perf_counter()
        with self.pool.connection() as conn:
            stored = store(conn, fp, uri, metadata)
            conn.commit()  # the image is kept even if linking it fails below
            self._timed("store", t1)
            edges = None
            if stored.created:  # provenance: match the new image against the collection, store its edges
                t2 = time.perf_counter()
                try:
                    edges = len(provenance.link(conn, stored.image_id))
                except ImgsearchError:  # left pending: `imgsearch relink --pending` links it later
                    conn.rollback()
                self._timed("link", t2)
        return {"id": stored.image_id, "created": stored.created, "sha256": fp.sha256.hex(), "uri": uri,
                "width": fp.width, "height": fp.height, "format": fp.format, "edges": edges,
                "links": links(stored.image_id)}

    def delete(self, image_id: int) -> None:
        with self.pool.connection() as conn:
            delete(conn, check_id(image_id))
