"""The OpenAPI 3.1 document, built from the route table and the ``@operation`` of each handler.

A handler declares who may call it (read / write / open), its parameters, its request body and
its responses next to its code; ``build(routes)`` turns the route table into ``/openapi.json``.
Nothing is listed twice: a route without ``@operation`` (the page, the static files) is not in
the document, and tests check every documented response shape against real responses.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from .. import __version__
from .guard import OPEN, READ, WRITE, presented_key


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # query | path | header
    schema: dict
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    access: str
    summary: str
    params: tuple[Param, ...] = ()
    body: dict | None = None  # content type -> schema
    responses: dict = field(default_factory=dict)  # status -> (description, content type, schema or None)
    errors: tuple[int, ...] = ()


def operation(access: str, summary: str, *, params=(), body=None, responses=None, errors=()):
    """Declare an API handler: checks the caller's key, then runs it; documents it for OpenAPI."""
    op = Operation(access, summary, tuple(params), body, responses or {}, tuple(errors))

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(request):
            request.app.state.keys.check(access, presented_key(request.headers))
            return await fn(request)

        handler.operation = op
        return handler

    return wrap


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_ok(description: str, schema: str) -> dict:
    return {200: (description, "application/json", ref(schema))}


BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
       "description": "x0, y0, x1, y1 as fractions of the image's width and height"}
NULLABLE_BOX = {"oneOf": [BOX, {"type": "null"}]}
LINKS = {"type": "object", "required": ["image", "thumbnail", "matches", "page"],
         "properties": {k: {"type": "string"} for k in ("image", "thumbnail", "matches", "page")}}
INT, STR, NUM, BOOL, OBJ = ({"type": "integer"}, {"type": "string"}, {"type": "number"}, {"type": "boolean"},
                            {"type": "object"})
NULL_STR, NULL_INT = {"type": ["string", "null"]}, {"type": ["integer", "null"]}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


SCHEMAS = {
    "Error": obj(["error"], error=obj(["code", "message"], code=STR, message=STR)),
    "Match": obj(["id", "uri", "uris", "score", "relation", "mirrored", "rotated", "distance", "query_box",
                  "target_box", "evidence", "thumbnail", "links"],
                 id=INT, uri=NULL_STR, uris={"type": "array", "items": STR},
                 score={"type": "integer", "minimum": 0, "maximum": 100},
                 relation={"enum": ["duplicate", "near_duplicate", "crop", "contains", "composite"]},
                 mirrored=BOOL, rotated=BOOL, distance=NULL_INT, inliers=NULL_INT, query_box=BOX, target_box=BOX,
                 evidence={"type": "array", "items": STR}, width=INT, height=INT, thumbnail=STR, links=LINKS),
    "SearchResult": obj(["query", "query_image", "matches", "timings_ms"], query=STR,
                        query_image=obj(["sha256", "width", "height", "format"], sha256=STR, width=INT, height=INT,
                                        format=STR, id=INT, links=LINKS),
                        matches={"type": "array", "items": ref("Match")},
                        timings_ms=obj(["fingerprint", "search"], fingerprint=NUM, search=NUM),
                        # on a database scaled out over shards only (docs/scale.md): some did not answer
                        partial=BOOL, missing_shards={"type": "array", "items": STR}),
    "SimilarImage": obj(["id", "uri", "uris", "similarity", "width", "height", "format", "thumbnail", "links"],
                        id=INT, uri=NULL_STR, uris={"type": "array", "items": STR},
                        similarity={"type": "number", "minimum": -1, "maximum": 1,
                                    "description": "cosine similarity of the embeddings: 1 the same, ~0 unrelated"},
                        width=INT, height=INT, format=STR, thumbnail=STR, links=LINKS),
    "SimilarResult": obj(["query", "matches", "timings_ms"], query=STR,
                         query_image=obj(["id", "links"], id=INT, links=LINKS),
                         matches={"type": "array", "items": ref("SimilarImage")},
                         timings_ms=obj(["embedding", "search"], embedding=NUM, search=NUM)),
    "ImageSummary": obj(["id", "sha256", "width", "height", "format", "file_size", "metadata", "created_at", "uri",
                         "links"], id=INT, sha256=STR, width=INT, height=INT, format=STR, file_size=INT, metadata=OBJ,
                        created_at=STR, uri=NULL_STR, links=LINKS),
    "ImageList": obj(["images", "next"], images={"type": "array", "items": ref("ImageSummary")}, next=NULL_STR),
    "Image": obj(["id", "sha256", "width", "height", "format", "file_size", "metadata", "created_at", "hashes",
                  "regions", "keypoints", "uris", "has_thumbnail", "links"],
                 id=INT, sha256=STR, width=INT, height=INT, format=STR, file_size=INT, metadata=OBJ, created_at=STR,
                 hashes=obj(["ahash", "dhash", "phash", "pdq", "pdq_quality"], ahash=STR, dhash=STR, phash=STR, pdq=STR,
                            pdq_quality=INT),
                 regions={"type": "array", "items": obj(["kind", "box", "phash"], kind=STR, box=BOX, phash=STR)},
                 keypoints=INT, uris={"type": "array", "items": obj(["uri", "first_seen"], uri=STR, first_seen=STR)},
                 has_thumbnail=BOOL, links=LINKS),
    "Stored": obj(["id", "created", "sha256", "uri", "width", "height", "format", "edges", "links"], id=INT,
                  created=BOOL, sha256=STR, uri=NULL_STR, width=INT, height=INT, format=STR,
                  edges=NULL_INT,  # provenance edges stored for a new image (null: already stored, or left pending)
                  links=LINKS),
    "RandomImage": obj(["id", "links"], id=INT, links=LINKS),
    "Comparison": obj(["related", "score", "relation", "mirrored", "rotated", "distance", "inliers", "evidence",
                       "a_box", "b_box", "a", "b"],
                      related=BOOL, score={"type": "integer", "minimum": 0, "maximum": 100},
                      relation={"enum": ["duplicate", "near_duplicate", "crop", "contains", "composite", None]},
                      mirrored=BOOL, rotated=BOOL, distance=NULL_INT, inliers=NULL_INT,
                      evidence={"type": "array", "items": STR}, a_box=NULLABLE_BOX, b_box=NULLABLE_BOX,
                      a=obj(["sha256", "width", "height", "format"], sha256=STR, width=INT, height=INT, format=STR),
                      b=obj(["sha256", "width", "height", "format"], sha256=STR, width=INT, height=INT, format=STR)),
    "Stats": obj(["counts", "schema_version", "server_version"], counts=OBJ, schema_version=INT,
                 latest_schema_version=INT, server_version=STR, pgvector_version=NULL_STR, database=STR, pool=OBJ),
    "Health": obj(["status"], status={"enum": ["ok"]}),
    "LineageEntry": obj(["id", "uri", "relation", "score", "query_box", "target_box", "transform"],
                        id=INT, uri=NULL_STR, relation={"enum": ["near_duplicate", "crop", "composite"]},
                        score={"type": "integer", "minimum": 0, "maximum": 100}, query_box=BOX, target_box=BOX,
                        transform=obj(["scale", "offset", "mirrored", "rotated"], scale=NUM,
                                      offset={"type": "array", "items": NUM, "minItems": 2, "maxItems": 2},
                                      mirrored=BOOL, rotated=BOOL),
                        ancestors={"type": "array", "items": ref("LineageEntry"),
                                   "description": "in ancestors: what this image came from"},
                        descendants={"type": "array", "items": ref("LineageEntry"),
                                     "description": "in descendants: what was made from this image"}),
    "Lineage": obj(["image", "ancestors", "descendants"], image=obj(["id", "uri"], id=INT, uri=NULL_STR),
                   ancestors={"type": "array", "items": ref("LineageEntry"),
                              "description": "what the image came from, up to the originals, best first"},
                   descendants={"type": "array", "items": ref("LineageEntry"),
                                "description": "what was made from the image, best first"}),
}

ERROR_TEXT = {400: "bad input (parameters, body, URL refused by policy)", 401: "an API key is needed",
              403: "the API key does not allow this", 404: "no such image", 408: "the body did not arrive in time",
              413: "the body or the image is too large", 415: "an image format we do not read",
              422: "not a decodable image, or the URL could not be fetched",
              501: "an optional extra is not installed (the message says how to enable it)",
              503: "the database is unavailable or the answer took too long"}
ACCESS_TEXT = {READ: "A read: open unless IMGSEARCH_READ_KEYS is set.",
               WRITE: "A write: needs a key from IMGSEARCH_API_KEYS.", OPEN: "Open to everyone."}


def _path(starlette_path: str) -> str:
    return re.sub(r"{([^:}]+)(:[^}]+)?}", r"{\1}", starlette_path)


def _operation(op: Operation) -> dict:
    out: dict = {"summary": op.summary, "description": ACCESS_TEXT[op.access], "responses": {}}
    if op.params:
        out["parameters"] = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                              "description": p.description, "schema": p.schema} for p in op.params]
    if op.body:
        out["requestBody"] = {"required": True, "content": {ct: {"schema": s} for ct, s in op.body.items()}}
    for status, (description, content_type, schema) in op.responses.items():
        resp: dict = {"description": description}
        if content_type:
            resp["content"] = {content_type: {"schema": schema or {}}}
        out["responses"][str(status)] = resp
    errors = set(op.errors) | ({401, 403} if op.access != OPEN else set()) | {503}
    for status in sorted(errors):
        out["responses"][str(status)] = {"description": ERROR_TEXT[status],
                                         "content": {"application/json": {"schema": ref("Error")}}}
    if op.access != OPEN:
        out["security"] = [{"bearer": []}, {"apiKey": []}] + ([{}] if op.access == READ else [])
    return out


def build(routes) -> dict:
    paths: dict = {}
    for route in routes:
        op = getattr(getattr(route, "endpoint", None), "operation", None)
        if op is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(_path(route.path), {})[method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "imgsearch", "version": __version__,
                 "description": "Reverse image search: find where an image, its copies, crops and composites are."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
