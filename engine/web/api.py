"""The API handlers: parse the request, run the work in threads, shape the JSON.

An image arrives as a multipart file field, a raw body (any content type but JSON and forms:
the bytes are decoded, the Content-Type is not trusted), or a URL (a ``url`` query parameter,
form field or JSON member) fetched by the safe fetcher (engine.fetch). Fingerprints run in a
thread, one at a time per process (``app.state.fingerprints``); SQL runs in threads on the pool.
"""

from __future__ import annotations

import functools
import json
import urllib.parse

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import embedding
from ..errors import InputError
from ..fetch import afetch
from ..provenance import DEFAULT_DEPTH
from . import openapi
from .guard import OPEN, READ, WRITE
from .metrics import CONTENT_TYPE
from .openapi import Param, json_ok, operation, ref
from .service import links

MAX_LIMIT = 100
MAX_PAGE = 500
MAX_METADATA_BYTES = 64 * 1024
MAX_URI = 4096
MAX_DEPTH = 20  # lineage generations each way: one row per path, so bounded
FILE_FIELDS = ("file", "image")

IMAGE_BODY = {"multipart/form-data": {"type": "object", "properties": {
                  "file": {"type": "string", "format": "binary", "description": "the image (or field 'image')"},
                  "url": {"type": "string", "description": "instead of a file: an http(s) URL to fetch"}}},
              "application/json": {"type": "object", "properties": {"url": {"type": "string"}}},
              "application/octet-stream": {"type": "string", "format": "binary",
                                           "description": "the image itself (any image/* type too)"}}
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10},
              "most matches returned")
MIN_SCORE = Param("min_score", "query", {"type": "integer", "minimum": 0, "maximum": 100, "default": 0},
                  "leave out matches scoring less")
ID = Param("id", "path", {"type": "integer", "minimum": 1}, "image id")
IMAGE_ERRORS = (400, 408, 413, 415, 422)


# --- helpers ---------------------------------------------------------------------------------
def service(request: Request):
    return request.app.state.service


async def in_thread(fn, *args, **kwargs):
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def fingerprinting(request: Request, fn, *args):
    """CPU-bound work (decoding, hashing, face detection): one at a time per process, which has a core."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=request.app.state.fingerprints)


def int_field(fields: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InputError(f"{name} must be a whole number from {lo} to {hi}")
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise InputError(f"{name}={value} is out of range: {lo} to {hi}")
    return value


async def read_body(request: Request) -> tuple[dict, dict]:
    """(files, fields) of a request: files are (bytes, file name); query parameters fill in fields."""
    files: dict[str, tuple[bytes, str]] = {}
    fields: dict = {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "GET":
        pass
    elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=4, max_fields=32) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files[key] = (await value.read(), value.filename or "upload")
                else:
                    fields[key] = value
    elif ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"the body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise InputError("the JSON body must be an object, e.g. {\"url\": \"https://...\"}")
        fields.update(body)
    else:
        data = await request.body()
        if data:
            files["file"] = (data, "upload")
    for key, value in request.query_params.items():
        fields.setdefault(key, value)
    return files, fields


async def image_from(request: Request, files: dict, fields: dict, names=FILE_FIELDS, url_names=("url",),
                     what: str = "an image") -> tuple[bytes, str, str | None]:
    """The image bytes, a name for messages, and the URL if it was fetched."""
    for name in names:
        if name in files:
            data, filename = files[name]
            return data, filename, None
    for name in url_names:
        url = fields.get(name)
        if url:
            if not isinstance(url, str):
                raise InputError(f"{name} must be a URL string")
            fetched = await afetch(url, request.app.state.settings)
            return fetched.content, url, url
    raise InputError(f"send {what}: a multipart file field '{names[0]}', the image as the request body, "
                     f"or a URL ('{url_names[0]}' as a query parameter, form field or JSON member)")


def storable(value: str, name: str) -> str:
    """PostgreSQL text and jsonb hold neither the NUL character nor a lone UTF-16 surrogate (which
    JSON's \\uD800 escapes can make): refuse them as bad input, not a 500."""
    if "\x00" in value:
        raise InputError(f"{name} cannot contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{name} cannot contain a lone UTF-16 surrogate (\\uD800-\\uDFFF)") from None
    return value


def metadata_field(fields: dict) -> dict:
    raw = fields.get("metadata")
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InputError("metadata must be a JSON object") from None
    if not isinstance(raw, dict):
        raise InputError("metadata must be a JSON object")
    if len(json.dumps(raw)) > MAX_METADATA_BYTES:
        raise InputError(f"metadata is larger than {MAX_METADATA_BYTES:,} bytes of JSON")
    _check_storable(raw)
    return raw


def _check_storable(value) -> None:
    if isinstance(value, str):
        storable(value, "metadata")
    elif isinstance(value, dict):
        for k, v in value.items():
            storable(k, "metadata")
            _check_storable(v)
    elif isinstance(value, list):
        for v in value:
            _check_storable(v)


# --- search ----------------------------------------------------------------------------------
SEARCH_DOC = dict(responses=json_ok("the matches, best first (as `imgsearch search --json`), with thumbnail links",
                                    "SearchResult"), errors=IMAGE_ERRORS)


async def _search(request: Request, files: dict, fields: dict) -> JSONResponse:
    limit = int_field(fields, "limit", 10, 1, MAX_LIMIT)
    min_score = int_field(fields, "min_score", 0, 0, 100)
    data, name, _ = await image_from(request, files, fields)
    q, seconds = await fingerprinting(request, service(request).query_fingerprint, data, name)
    result = await anyio.to_thread.run_sync(functools.partial(
        service(request).search, q, name, limit=limit, min_score=min_score, fingerprint_s=seconds),
        limiter=request.app.state.searches)
    return JSONResponse(result)


@operation(READ, "Search by the URL of an image", params=[
    Param("url", "query", {"type": "string"}, "http(s) URL of the query image", True), LIMIT, MIN_SCORE], **SEARCH_DOC)
async def search_get(request: Request) -> JSONResponse:
    return await _search(request, {}, dict(request.query_params))


@operation(READ, "Search by an uploaded image (multipart, raw body) or a URL (JSON)", params=[LIMIT, MIN_SCORE],
           body=IMAGE_BODY, **SEARCH_DOC)
async def search_post(request: Request) -> JSONResponse:
    return await _search(request, *await read_body(request))


# --- similar images (the optional 'semantic' extra) ------------------------------------------
SIMILAR_DOC = dict(responses=json_ok("the stored images most similar to the query, most similar first (as "
                                     "`imgsearch similar --json`), with thumbnail links", "SimilarResult"),
                   errors=(*IMAGE_ERRORS, 404, 501))
SIMILAR_ID = Param("id", "query", {"type": "integer", "minimum": 1}, "instead of an image: a stored image's id")


async def _similar(request: Request, files: dict, fields: dict) -> JSONResponse:
    limit = int_field(fields, "limit", 10, 1, MAX_LIMIT)
    embedding.require()  # 501 with how to enable it, before anything is read or fetched
    if not files and fields.get("id") not in (None, ""):
        stored_id = int_field(fields, "id", 0, 1, 2**63 - 1)
        return JSONResponse(await anyio.to_thread.run_sync(functools.partial(
            service(request).similar_stored, stored_id, limit=limit), limiter=request.app.state.searches))
    data, name, _ = await image_from(request, files, fields, what="an image (or the id of a stored one)")
    vector, seconds = await fingerprinting(request, service(request).similar_query_vector, data, name)
    result = await anyio.to_thread.run_sync(functools.partial(
        service(request).similar, vector, name, limit=limit, embedding_s=seconds), limiter=request.app.state.searches)
    return JSONResponse(result)


@operation(READ, "Similar images (same kind of thing) to the image at a URL or a stored image", params=[
    Param("url", "query", {"type": "string"}, "http(s) URL of the query image"), SIMILAR_ID, LIMIT], **SIMILAR_DOC)
async def similar_get(request: Request) -> JSONResponse:
    return await _similar(request, {}, dict(request.query_params))


@operation(READ, "Similar images to an uploaded image (multipart, raw body), a URL or a stored id (JSON)",
           params=[LIMIT], body={**IMAGE_BODY, "application/json": {"type": "object", "properties": {
               "url": {"type": "string"}, "id": {"type": "integer"}}}}, **SIMILAR_DOC)
async def similar_post(request: Request) -> JSONResponse:
    return await _similar(request, *await read_body(request))


# --- images ----------------------------------------------------------------------------------
@operation(WRITE, "Store an image (upload or URL) with metadata; the same bytes again only add the URI",
           params=[Param("uri", "query", {"type": "string"}, "where the image was seen (default: the URL fetched)"),
                   Param("metadata", "query", {"type": "string"}, "a JSON object stored with a new image")],
           body={**IMAGE_BODY, "application/json": {"type": "object", "properties": {
               "url": {"type": "string"}, "uri": {"type": "string"}, "metadata": {"type": "object"}}}},
           responses={201: ("stored: a new image", "application/json", ref("Stored")),
                      200: ("these bytes were stored already: the URI was added", "application/json", ref("Stored"))},
           errors=IMAGE_ERRORS)
async def add_image(request: Request) -> JSONResponse:
    files, fields = await read_body(request)
    metadata = metadata_field(fields)
    uri = fields.get("uri")
    if uri is not None and (not isinstance(uri, str) or len(uri) > MAX_URI):
        raise InputError(f"uri must be a string of at most {MAX_URI} characters")
    if uri is not None:
        storable(uri, "uri")
    data, name, url = await image_from(request, files, fields)
    fp = await fingerprinting(request, service(request).fingerprint, data, name)
    stored = await in_thread(service(request).add, fp, uri=uri or url, metadata=metadata)
    return JSONResponse(stored, status_code=201 if stored["created"] else 200,
                        headers={"location": stored["links"]["image"]})


@operation(READ, "List stored images, oldest first, filtered by metadata", params=[
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}, "page size"),
    Param("after", "query", {"type": "integer", "minimum": 0, "default": 0}, "cursor: list ids after this one"),
    Param("metadata", "query", {"type": "string"}, "a JSON object the metadata must contain"),
    Param("meta.KEY", "query", {"type": "string"}, "metadata[KEY] must equal this string (repeatable per key)"),
], responses=json_ok("a page of images; `next` is the URL of the following page, or null", "ImageList"),
    errors=(400,))
async def list_images(request: Request) -> JSONResponse:
    params = request.query_params
    limit = int_field(params, "limit", 50, 1, MAX_PAGE)
    after = int_field(params, "after", 0, 0, 2**63 - 1)
    metadata = metadata_field(params)
    for key, value in params.multi_items():
        if key.startswith("meta.") and len(key) > 5:
            metadata[storable(key[5:], "a meta.KEY name")] = storable(value, key)
    images = await in_thread(service(request).list_images, after=after, limit=limit, metadata=metadata)
    following = None
    if len(images) == limit:
        query = [(k, v) for k, v in params.multi_items() if k != "after"] + [("after", str(images[-1]["id"]))]
        following = "/api/images?" + urllib.parse.urlencode(query)
    return JSONResponse({"images": images, "next": following})


def image_id(request: Request) -> int:
    return request.path_params["id"]


@operation(READ, "One stored image: sizes, hashes, regions, metadata and every URI it was seen at", params=[ID],
           responses=json_ok("the image", "Image"), errors=(404,))
async def get_image(request: Request) -> JSONResponse:
    return JSONResponse(await in_thread(service(request).image, image_id(request)))


@operation(WRITE, "Delete a stored image", params=[ID], responses={204: ("deleted", None, None)}, errors=(404,))
async def delete_image(request: Request) -> Response:
    await in_thread(service(request).delete, image_id(request))
    return Response(status_code=204)


@operation(READ, "The stored image's thumbnail (JPEG, longer side <= 256 px)", params=[ID],
           responses={200: ("the thumbnail", "image/jpeg", {"type": "string", "format": "binary"}),
                      304: ("not modified (If-None-Match)", None, None)}, errors=(404,))
async def thumbnail(request: Request) -> Response:
    data, sha = await in_thread(service(request).thumbnail, image_id(request))
    etag = f'"{sha}"'
    headers = {"etag": etag, "cache-control": "public, max-age=86400"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@operation(READ, "Search with a stored image (its stored hashes and keypoints): what else it matches",
           params=[ID, LIMIT, MIN_SCORE], responses=json_ok("the matches, without the image itself", "SearchResult"),
           errors=(400, 404))
async def image_matches(request: Request) -> JSONResponse:
    limit = int_field(request.query_params, "limit", 10, 1, MAX_LIMIT)
    min_score = int_field(request.query_params, "min_score", 0, 0, 100)
    return JSONResponse(await anyio.to_thread.run_sync(functools.partial(
        service(request).search_stored, image_id(request), limit=limit, min_score=min_score),
        limiter=request.app.state.searches))


@operation(READ, "The image's provenance: what it was cut, edited or composed from, and what was made from it",
           params=[ID, Param("depth", "query", {"type": "integer", "minimum": 0, "maximum": MAX_DEPTH,
                                                "default": DEFAULT_DEPTH}, "generations each way")],
           responses=json_ok("two trees, as `imgsearch lineage --json`", "Lineage"), errors=(400, 404))
async def image_lineage(request: Request) -> JSONResponse:
    depth = int_field(request.query_params, "depth", DEFAULT_DEPTH, 0, MAX_DEPTH)
    return JSONResponse(await in_thread(service(request).lineage, image_id(request), depth))


@operation(READ, "A random stored image (for the page's 'random image' button)",
           responses=json_ok("its id and links", "RandomImage"), errors=(404,))
async def random_image(request: Request) -> JSONResponse:
    found = await in_thread(service(request).random_image)
    return JSONResponse({"id": found, "links": links(found)})


# --- compare, stats, health, metrics -----------------------------------------------------------------
@operation(READ, "Compare two images: score, relation and where the shared part lies in each",
           body={"multipart/form-data": {"type": "object", "required": ["a", "b"], "properties": {
                     "a": {"type": "string", "format": "binary", "description": "image a (a file, or a URL string)"},
                     "b": {"type": "string", "format": "binary", "description": "image b (a file, or a URL string)"}}},
                 "application/json": {"type": "object", "required": ["a", "b"],
                                      "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                      "description": "two http(s) URLs"}},
           responses=json_ok("how a relates to b: a_box is the shared part in a, b_box in b", "Comparison"),
           errors=IMAGE_ERRORS)
async def compare(request: Request) -> JSONResponse:
    files, fields = await read_body(request)
    a, a_name, _ = await image_from(request, files, fields, ("a",), ("a",), "two images, a and b")
    b, b_name, _ = await image_from(request, files, fields, ("b",), ("b",), "two images, a and b")
    qa, fb = await fingerprinting(request, service(request).fingerprint_pair, a, a_name, b, b_name)
    return JSONResponse(service(request).compare(qa, fb))


@operation(READ, "Counts of stored images, URIs, regions and postings; schema and server versions",
           responses=json_ok("the figures", "Stats"))
async def stats(request: Request) -> JSONResponse:
    return JSONResponse(await in_thread(service(request).stats))


@operation(OPEN, "Health: the database answers", responses=json_ok("healthy", "Health"))
async def healthz(request: Request) -> JSONResponse:
    await in_thread(service(request).ping)
    return JSONResponse({"status": "ok"})


@operation(READ, "Prometheus metrics of this server process (text format 0.0.4)",
           responses={200: ("the metrics", "text/plain", {"type": "string"})})
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), headers={"content-type": CONTENT_TYPE})


@operation(OPEN, "This document", responses={200: ("the OpenAPI 3.1 document", "application/json", {"type": "object"})})
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi.build(request.app.routes))
