"""The collection as a whole: its size (``stats``), every image as JSON (``export``), deleting
images by id or by a URI they were seen at (``delete``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .model import Hash
from .queries import query
from .sources import is_url

EXPORT_ROWS_PER_FETCH = 500


def stats(conn: psycopg.Connection) -> dict:
    """Row counts, database size and the size of every table and index, in bytes."""
    info = dict(conn.execute(query("stats_counts")).fetchone())
    tables: dict[str, dict] = {}
    indexes: dict[str, dict] = {}
    for row in conn.execute(query("stats_relations")):
        if row["kind"] == "table":
            tables[row["name"]] = {"bytes": row["bytes"], "index_bytes": 0}
        else:
            indexes[row["name"]] = {"table": row["table_name"], "bytes": row["bytes"]}
    for index in indexes.values():
        if index["table"] in tables:
            tables[index["table"]]["index_bytes"] += index["bytes"]
    conn.commit()
    return {**info, "tables": tables, "indexes": indexes}


def _hex(bits: str) -> str:
    return Hash.from_bitstring(bits).hex()


def export_row(row: dict) -> dict:
    return {
        "id": row["id"], "uris": list(row["uris"]), "sha256": bytes(row["sha256"]).hex(),
        "width": row["width"], "height": row["height"], "format": row["format"], "file_size": row["file_size"],
        "hashes": {
            "ahash": _hex(row["ahash"]), "dhash": _hex(row["dhash"]), "phash": _hex(row["phash"]),
            "pdq": _hex(row["pdq"]), "pdq_quality": row["pdq_quality"],
            "regions": [{"kind": kind, "box": [round(v, 4) for v in (x0, y0, x1, y1)], "phash": _hex(bits)}
                        for kind, x0, y0, x1, y1, bits in row["regions"]],
        },
        "metadata": row["metadata"], "created_at": row["created_at"].isoformat(),
    }


def export(conn: psycopg.Connection, after_id: int = 0) -> Iterator[dict]:
    """Every image (id > after_id) in id order, streamed through a server-side cursor."""
    with conn.transaction(), conn.cursor(name="imgsearch_export") as cur:
        cur.itersize = EXPORT_ROWS_PER_FETCH
        cur.execute(query("export_images"), {"after_id": after_id})
        for row in cur:
            yield export_row(row)


@dataclass(frozen=True)
class Deleted:
    ref: str  # as given: an id or a URI
    image_id: int | None  # None: nothing matched
    uris: tuple[str, ...] = ()


def _uri_forms(ref: str) -> list[str]:
    """A URI as typed, and for a path also its absolute form (ingest records absolute paths)."""
    if is_url(ref):
        return [ref]
    return list(dict.fromkeys([ref, str(Path(ref).expanduser().resolve())]))


def delete(conn: psycopg.Connection, refs: Sequence[str]) -> list[Deleted]:
    """Delete images, each named by its id (digits) or by a URI it was seen at: the whole image
    goes, with every URI, region, keypoint and posting (one transaction)."""
    wanted: dict[str, list[int]] = {}
    forms = {ref: _uri_forms(ref) for ref in refs if not ref.isdigit()}
    all_forms = [f for fs in forms.values() for f in fs]
    by_uri: dict[str, set[int]] = {}
    for row in conn.execute(query("image_ids_by_uri"), {"uris": all_forms}) if all_forms else ():
        by_uri.setdefault(row["uri"], set()).add(row["image_id"])
    for ref in refs:
        if ref.isdigit():
            wanted[ref] = [int(ref)]
        else:
            wanted[ref] = sorted({i for f in forms[ref] for i in by_uri.get(f, ())})
    ids = sorted({i for found in wanted.values() for i in found})
    with conn.transaction():
        brief = {row["id"]: tuple(row["uris"]) for row in conn.execute(query("images_brief"), {"ids": ids})}
        gone = {row["id"] for row in conn.execute(query("delete_images"), {"ids": ids})}
    out = []
    for ref in refs:
        hits = [i for i in wanted[ref] if i in gone]
        if hits:
            out.extend(Deleted(ref, i, brief.get(i, ())) for i in hits)
        else:
            out.append(Deleted(ref, None))
    return out
