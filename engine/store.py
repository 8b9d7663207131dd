"""Storing fingerprints: one image, whole or not at all, never twice.

An image is keyed by the SHA-256 of its bytes. Storing bytes we already hold adds the new
URI to that image (the same picture seen at another place) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from . import keypoints as kpmod
from .errors import NotFoundError
from .model import Fingerprint
from .queries import query


@dataclass(frozen=True)
class Stored:
    image_id: int
    created: bool  # False: the bytes were already stored (the URI was added)


def region_rows(image_id: int, fp: Fingerprint) -> list[tuple]:
    """The global pHash is region 0; the content-aligned regions follow."""
    rows = [(image_id, 0, "global", 0.0, 0.0, 1.0, 1.0, fp.phash.bitstring())]
    for no, region in enumerate(fp.regions, start=1):
        x0, y0, x1, y1 = region.box
        rows.append((image_id, no, region.kind, x0, y0, x1, y1, region.hash.bitstring()))
    return rows


def store(conn: psycopg.Connection, fp: Fingerprint, uri: str | None, metadata: dict | None = None) -> Stored:
    """Insert one fingerprinted image in its own transaction (or the caller's)."""
    with conn.transaction():
        row = conn.execute(query("insert_image"), {
            "sha256": fp.sha256, "width": fp.width, "height": fp.height, "format": fp.format,
            "file_size": fp.file_size, "ahash": fp.ahash.bitstring(), "dhash": fp.dhash.bitstring(),
            "phash": fp.phash.bitstring(), "pdq": fp.pdq.bitstring(), "pdq_quality": fp.pdq_quality,
            "thumbnail": fp.thumbnail, "metadata": Jsonb(metadata or {}),
        }).fetchone()
        created = row is not None
        if created:
            image_id = row["id"]
            with conn.cursor() as cur:
                cur.executemany(query("insert_region"), region_rows(image_id, fp))
                if fp.keypoints is not None and len(fp.keypoints):
                    cur.execute(query("insert_keypoints"), {"image_id": image_id,
                                                            "data": kpmod.to_bytes(fp.keypoints)})
                    post = kpmod.postings(fp.keypoints)
                    cur.execute(query("insert_postings"), {"image_id": image_id, "words": post.word.tolist(),
                                                           "angles": post.angle.tolist(),
                                                           "levels": post.level.tolist()})
        else:
            image_id = conn.execute(query("image_id_by_sha256"), {"sha256": fp.sha256}).fetchone()["id"]
        if uri:
            conn.execute(query("insert_uri"), {"image_id": image_id, "uri": uri})
    return Stored(image_id, created)


def delete(conn: psycopg.Connection, image_id: int) -> None:
    with conn.transaction():
        if conn.execute(query("delete_image"), {"id": image_id}).fetchone() is None:
            raise NotFoundError(f"no image with id {image_id}")
