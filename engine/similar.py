"""Similar images: the stored images whose embeddings are nearest to a query's ("more like this").

Where the hashes and keypoints find copies and derivatives of one picture, this finds pictures of
the same kind of thing (castles, cats, espresso cups...): cosine nearest neighbours of the
MobileNetV2 embeddings (engine.embedding) in pgvector's HNSW index (``image_embeddings``). A query
is a file or URL (embedded as a stored image would be: its thumbnail) or a stored image (its stored
vector; one stored before the extra was enabled is embedded from its thumbnail on the fly).
``backfill`` embeds every stored image that has no vector yet, in id-ordered batches, each one
transaction, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from . import embedding
from .config import Settings
from .errors import DatabaseError, NotFoundError
from .queries import query
from .store import embedding_text

MIN_EF_SEARCH = 40  # pgvector's default; raised to the number of neighbours asked for
BACKFILL_BATCH = 32  # thumbnails through the network at once (torch uses every core on a batch)


@dataclass(frozen=True)
class SimilarImage:
    id: int
    uri: str | None
    uris: tuple[str, ...]
    similarity: float  # cosine similarity of the embeddings, 1 - distance: 1 the same, ~0 unrelated
    width: int
    height: int
    format: str

    def to_json(self) -> dict:
        return {"id": self.id, "uri": self.uri, "uris": list(self.uris), "similarity": round(self.similarity, 4),
                "width": self.width, "height": self.height, "format": self.format}


@dataclass(frozen=True)
class BackfillSummary:
    embedded: int
    remaining: int  # images still without an embedding (none unless interrupted)
    without_thumbnail: int  # images that cannot be embedded: they have no stored thumbnail
    seconds: float

    def to_json(self) -> dict:
        return {"embedded": self.embedded, "remaining": self.remaining, "without_thumbnail": self.without_thumbnail,
                "seconds": round(self.seconds, 3),
                "rate": round(self.embedded / self.seconds, 2) if self.seconds > 0 and self.embedded else None}


def nearest(conn: psycopg.Connection, vector: np.ndarray, limit: int = 10,
            exclude: int | None = None) -> list[SimilarImage]:
    """The `limit` stored images nearest to vector, most similar first (`exclude`: an id left out)."""
    wanted = limit + (exclude is not None)
    with conn.transaction():
        conn.execute(query("set_ef_search"), {"ef": str(max(MIN_EF_SEARCH, wanted))})
        rows = conn.execute(query("similar_images"), {"embedding": embedding_text(vector), "limit": wanted}).fetchall()
    found = [SimilarImage(r["id"], r["uris"][0] if r["uris"] else None, tuple(r["uris"]), 1.0 - float(r["distance"]),
                          r["width"], r["height"], r["format"]) for r in rows if r["id"] != exclude]
    return found[:limit]


def query_vector(source: Path | str | bytes, *, name: str | None = None,
                 settings: Settings | None = None) -> np.ndarray:
    """The embedding of an image file or bytes, made as a stored image's is (from its thumbnail)."""
    from .fingerprint import WORKING_SIDE
    from .loading import load_image, thumbnail_jpeg

    embedding.require()
    loaded = load_image(source, name=name, settings=settings, target_size=WORKING_SIDE)
    return embedding.embed_thumbnail(thumbnail_jpeg(loaded.image))


def stored_vector(conn: psycopg.Connection, image_id: int) -> np.ndarray:
    """A stored image's embedding; one not stored yet is computed from the thumbnail (and not stored)."""
    embedding.require()
    row = conn.execute(query("stored_embedding"), {"id": image_id}).fetchone()
    conn.commit()
    if row is None:
        raise NotFoundError(f"no image with id {image_id}")
    if row["embedding"] is not None and row["model"] == embedding.MODEL:
        return embedding.from_text(row["embedding"])
    if row["thumbnail"] is None:
        raise NotFoundError(f"image {image_id} has no thumbnail to embed")
    return embedding.embed_thumbnail(bytes(row["thumbnail"]))


def similar_to_stored(conn: psycopg.Connection, image_id: int, limit: int = 10) -> list[SimilarImage]:
    return nearest(conn, stored_vector(conn, image_id), limit, exclude=image_id)


def counts(conn: psycopg.Connection) -> dict:
    row = dict(conn.execute(query("embedding_counts")).fetchone())
    conn.commit()
    return row


def backfill(conn: psycopg.Connection, *, batch: int = BACKFILL_BATCH,
             progress: Callable[[int], object] | None = None) -> BackfillSummary:
    """Embed every stored image without an embedding (of this model); ``progress(n)``: n more done."""
    embedding.require()
    started = time.perf_counter()
    progress = progress or (lambda n: None)
    done = after = 0
    try:
        while True:
            rows = conn.execute(query("images_to_embed"),
                                {"after": after, "model": embedding.MODEL, "limit": batch}).fetchall()
            conn.commit()
            if not rows:
                break
            vectors = embedding.embed_thumbnails([bytes(r["thumbnail"]) for r in rows])
            with conn.transaction():
                conn.execute(query("upsert_embeddings"), {"model": embedding.MODEL,
                                                          "image_ids": [r["id"] for r in rows],
                                                          "embeddings": [embedding_text(v) for v in vectors]})
            done += len(rows)
            after = rows[-1]["id"]
            progress(len(rows))
        left = conn.execute(query("count_to_embed"), {"model": embedding.MODEL}).fetchone()
        conn.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"the database failed during the backfill: {str(exc).strip()}") from exc
    return BackfillSummary(done, left["n"], left["without_thumbnail"], time.perf_counter() - started)
