"""Similar images: the stored images whose embeddings are nearest to a query's ("more like this").

Where the hashes and keypoints find copies and derivatives of one picture, this finds pictures of
the same kind of thing (castles, cats, espresso cups...): cosine nearest neighbours of the
MobileNetV2 embeddings (engine.embedding) in pgvector's HNSW index (``image_embeddings``). A query
is a file or URL (embedded as a stored image would be: its thumbnail) or a stored image (its stored
vector; one stored before the extra was enabled is embedded from its thumbnail on the fly).
``backfill`` embeds every stored image that has no vector yet: batches of thumbnails in worker
processes (one torch thread each, as ingest's: one process per core beats one process of several
threads, and far so on a busy machine), each batch committed as it comes, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import os
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

MIN_EF_SEARCH = 100  # HNSW candidates per query (pgvector default 40: recall@10 0.87 at 1M vectors, 100: 0.94)
BACKFILL_BATCH = 32  # thumbnails per task of a backfill worker (one network pass)


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


# --- backfill: worker processes, as ingest's -----------------------------------------------------
_worker: dict = {}


def _init_worker(conninfo: str) -> None:
    """A backfill worker: one torch thread (one process per core, as ingest)."""
    _worker["conninfo"] = conninfo
    embedding.set_threads(1)


def embed_batch(ids: list[int]) -> tuple[list[int], list[str]]:
    """In a worker: the thumbnails of these images read on its own connection, embedded."""
    if _worker.get("conn") is None or _worker["conn"].closed:
        _worker["conn"] = psycopg.connect(_worker["conninfo"], autocommit=True, connect_timeout=10)
    rows = _worker["conn"].execute(query("thumbnails_by_id"), {"ids": ids}).fetchall()
    vectors = embedding.embed_thumbnails([bytes(r[1]) for r in rows])
    return [r[0] for r in rows], [embedding_text(v) for v in vectors]


def _crashed(ids: list[int]) -> tuple[list[int], list[str]]:
    return [], []  # left without an embedding: counted in `remaining`, a re-run tries again


def backfill(conn: psycopg.Connection, *, batch: int = BACKFILL_BATCH, workers: int | None = None,
             progress: Callable[[int], object] | None = None) -> BackfillSummary:
    """Embed every stored image without an embedding (of this model) in `workers` processes (default:
    all cores; 0: in this one), a batch of thumbnails per task; each batch is committed as it comes,
    so an interrupted run resumes. ``progress(n)``: n more done."""
    from .ingest import _conninfo
    from .workpool import imap_unordered

    embedding.require()
    started = time.perf_counter()
    progress = progress or (lambda n: None)
    workers = (os.cpu_count() or 1) if workers is None else workers
    done = 0
    try:
        ids = [r["id"] for r in conn.execute(query("images_to_embed"), {"model": embedding.MODEL})]
        conn.commit()
        tasks = [ids[at:at + batch] for at in range(0, len(ids), batch)]
        if workers <= 0 or len(tasks) < 2:  # in this process, on a connection of its own as a worker's
            _worker.update(conninfo=_conninfo(conn), conn=None)
            results = map(embed_batch, tasks)
        else:
            results = imap_unordered(embed_batch, tasks, workers, crashed=_crashed, initializer=_init_worker,
                                     initargs=(_conninfo(conn),))
        for got, texts in results:
            if got:
                with conn.transaction():
                    conn.execute(query("upsert_embeddings"), {"model": embedding.MODEL, "image_ids": got,
                                                              "embeddings": texts})
                done += len(got)
                progress(len(got))
        left = conn.execute(query("count_to_embed"), {"model": embedding.MODEL}).fetchone()
        conn.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"the database failed during the backfill: {str(exc).strip()}") from exc
    finally:
        if _worker.get("conn") is not None:
            _worker.pop("conn").close()
    return BackfillSummary(done, left["n"], left["without_thumbnail"], time.perf_counter() - started)
