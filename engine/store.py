"""Storing fingerprints: one image, whole or not at all, never twice.

An image is keyed by the SHA-256 of its bytes. Storing bytes we already hold adds the new
URI to that image (the same picture seen at another place) and nothing else.

``prepare`` turns a fingerprint into the rows the tables take (in an ingest worker process);
``store_batch`` writes many prepared images in one transaction: a multi-row insert for
``images`` and ``image_uris``, COPY for ``regions``, ``image_keypoints`` and the postings of
``keypoint_words``. A batch is committed whole or not at all, so an interrupted run leaves every
image either complete (with its regions, keypoints, postings and URIs) or absent.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from . import keypoints as kpmod
from .errors import NotFoundError
from .model import Fingerprint
from .queries import query


@dataclass(frozen=True)
class Stored:
    image_id: int
    created: bool  # False: the bytes were already stored (the URI was added)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A fingerprint as rows: bit strings for the hashes, packed keypoints, postings arrays."""

    sha256: bytes
    width: int
    height: int
    format: str
    file_size: int
    ahash: str
    dhash: str
    phash: str
    pdq: str
    pdq_quality: int
    thumbnail: bytes | None
    regions: tuple[tuple, ...]  # (region_no, kind, x0, y0, x1, y1, hash bit string)
    keypoints: bytes | None
    words: np.ndarray | None = None  # int32 postings of the keypoints: word, angle, level
    angles: np.ndarray | None = None
    levels: np.ndarray | None = None
    embedding: str | None = None  # pgvector text of the similar-images embedding (the optional extra)


@dataclass(frozen=True)
class Entry:
    """One input of a batch: a prepared image and where it was seen."""

    prepared: Prepared
    uri: str | None = None
    metadata: dict | None = None


def region_rows(fp: Fingerprint) -> tuple[tuple, ...]:
    """The global pHash is region 0; the content-aligned regions follow."""
    rows = [(0, "global", 0.0, 0.0, 1.0, 1.0, fp.phash.bitstring())]
    for no, region in enumerate(fp.regions, start=1):
        x0, y0, x1, y1 = region.box
        rows.append((no, region.kind, x0, y0, x1, y1, region.hash.bitstring()))
    return tuple(rows)


def prepare(fp: Fingerprint) -> Prepared:
    kp = fp.keypoints if fp.keypoints is not None and len(fp.keypoints) else None
    post = kpmod.postings(kp) if kp is not None else None
    return Prepared(
        sha256=fp.sha256, width=fp.width, height=fp.height, format=fp.format, file_size=fp.file_size,
        ahash=fp.ahash.bitstring(), dhash=fp.dhash.bitstring(), phash=fp.phash.bitstring(), pdq=fp.pdq.bitstring(),
        pdq_quality=fp.pdq_quality, thumbnail=fp.thumbnail, regions=region_rows(fp),
        keypoints=kpmod.to_bytes(kp) if kp is not None else None,
        words=post.word.astype(np.int32) if post is not None else None,
        angles=post.angle.astype(np.int16) if post is not None else None,
        levels=post.level.astype(np.int16) if post is not None else None,
        embedding=embedding_text(fp.embedding) if fp.embedding is not None else None,
    )


def embedding_text(vector: np.ndarray) -> str:
    """pgvector's text form, '[0.1,-0.2,...]'."""
    return "[" + ",".join(f"{v:.7g}" for v in vector.tolist()) + "]"


_POSTING = np.dtype([("fields", ">i2"), ("wlen", ">i4"), ("word", ">i4"), ("ilen", ">i4"), ("image_id", ">i8"),
                     ("alen", ">i4"), ("angle", ">i2"), ("llen", ">i4"), ("level", ">i2")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def postings_copy_data(rows: Sequence[tuple[int, Prepared]]) -> bytes:
    """keypoint_words rows (word, image_id, angle, level) in COPY's binary format, built by numpy."""
    parts = [p for p in rows if p[1].words is not None and len(p[1].words)]
    n = sum(len(p.words) for _, p in parts)
    out = np.zeros(n, dtype=_POSTING)
    out["fields"], out["wlen"], out["ilen"], out["alen"], out["llen"] = 4, 4, 8, 2, 2
    at = 0
    for image_id, p in parts:
        k = len(p.words)
        out["word"][at:at + k], out["image_id"][at:at + k] = p.words, image_id
        out["angle"][at:at + k], out["level"][at:at + k] = p.angles, p.levels
        at += k
    out = out[np.argsort(out["word"], kind="stable")]  # index insertions in key order: fewer pages touched at random
    return _COPY_HEADER + out.tobytes() + _COPY_TRAILER


def _columns(preps: Sequence[Prepared], metadata: Sequence[dict]) -> dict:
    return {
        "sha256": [p.sha256 for p in preps], "width": [p.width for p in preps], "height": [p.height for p in preps],
        "format": [p.format for p in preps], "file_size": [p.file_size for p in preps],
        "ahash": [p.ahash for p in preps], "dhash": [p.dhash for p in preps], "phash": [p.phash for p in preps],
        "pdq": [p.pdq for p in preps], "pdq_quality": [p.pdq_quality for p in preps],
        "thumbnail": [p.thumbnail for p in preps], "metadata": [json.dumps(m) for m in metadata],
    }


def store_batch(conn: psycopg.Connection, entries: Sequence[Entry]) -> list[Stored]:
    """Store many images in one transaction (or the caller's); one ``Stored`` per entry, in order.

    Entries with the same bytes make one image (the first entry's is created, the others are
    duplicates); metadata of several entries is merged, the first value of a key winning.
    """
    if not entries:
        return []
    groups: dict[bytes, list[int]] = {}
    for no, entry in enumerate(entries):
        groups.setdefault(entry.prepared.sha256, []).append(no)
    merged: dict[bytes, dict] = {}
    for sha, nos in groups.items():
        meta: dict = {}
        for no in reversed(nos):
            meta.update(entries[no].metadata or {})
        merged[sha] = meta
    firsts = [entries[nos[0]].prepared for nos in groups.values()]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("insert_images_batch"), _columns(firsts, [merged[p.sha256] for p in firsts]))
        created = {bytes(row["sha256"]): row["id"] for row in cur.fetchall()}
        ids = dict(created)
        if len(created) < len(groups):
            cur.execute(query("image_ids_by_sha256"), {"sha256": [s for s in groups if s not in created]})
            ids.update((bytes(row["sha256"]), row["id"]) for row in cur.fetchall())
        new = [(created[p.sha256], p) for p in firsts if p.sha256 in created]
        if new:
            with cur.copy(query("copy_regions")) as copy:
                for image_id, p in new:
                    for row in p.regions:
                        copy.write_row((image_id, *row))
            with cur.copy(query("copy_keypoints")) as copy:
                for image_id, p in new:
                    if p.keypoints is not None:
                        copy.write_row((image_id, p.keypoints))
            with cur.copy(query("copy_postings_binary")) as copy:
                copy.write(postings_copy_data(new))
            embedded = [(image_id, p.embedding) for image_id, p in new if p.embedding is not None]
            if embedded:
                from .embedding import MODEL

                with cur.copy(query("copy_embeddings")) as copy:
                    for image_id, text in embedded:
                        copy.write_row((image_id, MODEL, text))
        old_meta = [(ids[s], m) for s, m in merged.items() if s not in created and m]
        if old_meta:
            cur.execute(query("merge_metadata_batch"), {"image_ids": [i for i, _ in old_meta],
                                                        "metadata": [json.dumps(m) for _, m in old_meta]})
        uris = [(ids[e.prepared.sha256], e.uri) for e in entries if e.uri]
        if uris:
            cur.execute(query("insert_uris_batch"), {"image_ids": [i for i, _ in uris], "uris": [u for _, u in uris]})
    return [Stored(ids[e.prepared.sha256], e.prepared.sha256 in created and groups[e.prepared.sha256][0] == no)
            for no, e in enumerate(entries)]


def record_uris(conn: psycopg.Connection, entries: Sequence[tuple[bytes, str, dict | None]]) -> dict[bytes, int]:
    """Record (sha256, uri, metadata) for bytes stored already, in one transaction (or the
    caller's); returns {sha256: image id} of those found (an image deleted meanwhile is not)."""
    if not entries:
        return {}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("lock_images_by_sha256"), {"sha256": list({sha for sha, _, _ in entries})})
        ids = {bytes(row["sha256"]): row["id"] for row in cur.fetchall()}
        found = [(ids[sha], uri, meta) for sha, uri, meta in entries if sha in ids]
        if found:
            cur.execute(query("insert_uris_batch"), {"image_ids": [i for i, _, _ in found],
                                                     "uris": [u for _, u, _ in found]})
        merged: dict[int, dict] = {}
        for image_id, _, meta in reversed(found):
            if meta:
                merged[image_id] = {**merged.get(image_id, {}), **meta}
        if merged:
            cur.execute(query("merge_metadata_batch"), {"image_ids": list(merged),
                                                        "metadata": [json.dumps(m) for m in merged.values()]})
    return ids


def store(conn: psycopg.Connection, fp: Fingerprint, uri: str | None, metadata: dict | None = None) -> Stored:
    """Insert one fingerprinted image in its own transaction (or the caller's)."""
    return store_batch(conn, [Entry(prepare(fp), uri, metadata)])[0]


def delete(conn: psycopg.Connection, image_id: int) -> None:
    with conn.transaction():
        if conn.execute(query("delete_image"), {"id": image_id}).fetchone() is None:
            raise NotFoundError(f"no image with id {image_id}")
