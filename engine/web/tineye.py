"""TinEye's REST shape, as its official Python client (pytineye 3.0.0) uses it.

A team whose code calls TinEye's hosted API through ``pytineye`` points it at this server
(``TinEyeAPIRequest(api_url="http://HOST:PORT/rest/", api_key=KEY)``) and keeps its code. The
client joins ``/rest/<method>/`` to the host of ``api_url``, sends the key as ``x-api-key``, a GET
with query parameters or, for an upload, a multipart POST with the file in ``image_upload``; it
raises ``TinEyeAPIError(code, messages)`` when the HTTP status or the body's ``code`` is not 200,
and it reads ``code`` from every error body (a body without one makes it fail with a KeyError):
so every answer under /rest/ is ``{"code", "messages", "results", "stats"}``, errors included
(app.py's handlers and the Guard's own answers delegate to ``error_response`` for /rest/ paths).

The search, the fetch of ``image_url`` and the key check are the ones of our own API
(``Service``, ``api.image_from``, ``Keys``); this module only parses TinEye's parameters and shapes
TinEye's JSON. These routes are left out of /openapi.json (``include_in_schema=False``): the
shape is TinEye's and documented by TinEye; README.md says what we support of it.
"""

from __future__ import annotations

import functools
import io
import logging
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio.to_thread
import psycopg
from PIL import Image, ImageDraw
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ImgsearchError, InputError, NotFoundError
from ..loading import load_image, thumbnail_jpeg
from ..queries import query
from .api import fingerprinting, image_from, in_thread, int_field, read_body, service
from .guard import OPEN, READ, presented_key

log = logging.getLogger("imgsearch.web")

PREFIX = "/rest/"
WINDOW = 200  # matches ranked per search (by score); offset + limit and the other sorts work inside it
SORTS = ("score", "size", "crawl_date")
ORDERS = ("desc", "asc")
UNLIMITED = 2**31 - 1  # remaining_searches when no quota is configured (a number: clients compare it)
STARTED = datetime.now(UTC).replace(microsecond=0)
HTTP_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                    405: "Method not allowed", 408: "Request timeout", 413: "Payload too large",
                    415: "Unsupported media type", 422: "Unprocessable entity", 500: "Internal server error",
                    501: "Not implemented", 503: "Service unavailable"}


def is_tineye(path: str) -> bool:
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


def _stats(**extra) -> dict:
    return {"timestamp": f"{time.time():.2f}", **extra}


def error_body(status: int, message: str) -> dict:
    """TinEye's error: the client raises TinEyeAPIError(code, messages) with it."""
    return {"code": status, "messages": [message], "results": {}, "stats": _stats()}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def ok(results, **stats) -> JSONResponse:
    return JSONResponse({"code": 200, "messages": [], "results": results, "stats": _stats(**stats)})


def tineye_route(access: str):
    """Check the key as our API does, and answer every failure in TinEye's error shape."""

    def wrap(fn):
        @functools.wraps(fn)
        async def handler(request: Request) -> Response:
            try:
                if access != OPEN:  # pytineye sends 'x-api-key: ' (empty) when it has no key: that is no key
                    request.app.state.keys.check(access, presented_key(request.headers) or None)
                return await fn(request)
            except ImgsearchError as exc:
                if exc.http_status >= 500:
                    log.warning("%s %s: %s: %s", request.method, request.url.path, exc.code, exc.message)
                headers = {"www-authenticate": 'Bearer realm="imgsearch"'} if exc.http_status == 401 else None
                return error_response(exc.http_status, exc.message, headers)
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail))
            except (PoolTimeout, psycopg.OperationalError) as exc:
                log.warning("database unavailable: %s", exc)
                return error_response(503, f"the database is unavailable: {str(exc).strip()}", {"retry-after": "5"})
            except Exception as exc:  # noqa: BLE001 - logged, answered as TinEye's 500
                log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
                return error_response(500, "an unexpected error occurred; it has been logged")

        return handler

    return wrap


# --- overlays -------------------------------------------------------------------------------------
# An overlay shows the query next to the match, so the server needs the query image after the
# search has answered. We keep a small thumbnail of each recent query in a bounded in-memory LRU
# (OVERLAY_ENTRIES searches, each expiring after OVERLAY_TTL_S), keyed by a random 128-bit token
# that is in the overlay URL. Why not the alternatives: the query is not stored (a search must not
# write to the collection), and a thumbnail encoded into the URL would make every match's URL a few
# KB long (100 matches: hundreds of KB of JSON). The cost: an overlay URL lives in the process that
# ran the search, until it expires or is pushed out; elsewhere (another --workers process, after a
# restart) it is a clean 404. The token is the capability: overlay URLs need no API key, so they can
# be used as <img src>; they show only the query and thumbnails the searcher was already given.
OVERLAY_ENTRIES = 256
OVERLAY_TTL_S = 3600.0
OVERLAY_SIDE = 256


@dataclass
class _Overlay:
    query_thumbnail: bytes
    boxes: dict[int, tuple[list, list]]  # match id -> (query_box, target_box)
    created: float = field(default_factory=time.monotonic)


class OverlayCache:
    def __init__(self, entries: int = OVERLAY_ENTRIES, ttl_s: float = OVERLAY_TTL_S):
        self.entries, self.ttl_s = entries, ttl_s
        self._items: OrderedDict[str, _Overlay] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, item: _Overlay) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = item
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> _Overlay | None:
        with self._lock:
            item = self._items.get(token)
            if item is None:
                return None
            if time.monotonic() - item.created > self.ttl_s:
                del self._items[token]
                return None
            self._items.move_to_end(token)
            return item


def overlays(request: Request) -> OverlayCache:
    state = request.app.state
    if getattr(state, "tineye_overlays", None) is None:
        state.tineye_overlays = OverlayCache()
    return state.tineye_overlays


def _scaled(data: bytes, height: int) -> Image.Image:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    width = max(1, round(im.width * height / im.height))
    return im.resize((width, height), Image.Resampling.LANCZOS)


def render_overlay(query_thumb: bytes, match_thumb: bytes, query_box, target_box) -> bytes:
    """The query (left) and the match (right) at one height, the shared region outlined in each."""
    left, right = _scaled(query_thumb, OVERLAY_SIDE), _scaled(match_thumb, OVERLAY_SIDE)
    gap = 8
    canvas = Image.new("RGB", (left.width + gap + right.width, OVERLAY_SIDE), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    draw = ImageDraw.Draw(canvas)
    for (x, w), box in (((0, left.width), query_box), ((left.width + gap, right.width), target_box)):
        x0, y0, x1, y1 = box
        draw.rectangle((x + x0 * (w - 1), y0 * (OVERLAY_SIDE - 1), x + x1 * (w - 1), y1 * (OVERLAY_SIDE - 1)),
                       outline=(255, 32, 32), width=3)
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()


@tineye_route(OPEN)
async def overlay(request: Request) -> Response:
    item = overlays(request).get(request.path_params["token"])
    match_id = request.path_params["id"]
    if item is None:
        raise NotFoundError("this overlay has expired or was never made here: search again for a new one")
    if match_id not in item.boxes:
        raise NotFoundError(f"image {match_id} is not a match of this search")
    match_thumb, _ = await in_thread(service(request).thumbnail, match_id)
    query_box, target_box = item.boxes[match_id]
    png = await in_thread(render_overlay, item.query_thumbnail, match_thumb, query_box, target_box)
    return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})


# --- search ---------------------------------------------------------------------------------------
def _choice(fields: dict, name: str, allowed: tuple[str, ...]) -> str:
    value = fields.get(name) or allowed[0]
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def domain_of(uri: str | None) -> str:
    """The host of an http(s) URI; '' for file paths and other URIs without one."""
    if not uri:
        return ""
    try:
        return urllib.parse.urlsplit(uri).hostname or ""
    except ValueError:
        return ""


def _details(pool, ids: list[int]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    if not ids:
        return out
    with pool.connection() as conn:
        for row in conn.execute(query("tineye_match_details"), {"ids": ids}).fetchall():
            entry = out.setdefault(row["id"], {"format": row["format"], "file_size": row["file_size"],
                                               "backlinks": []})
            if row["uri"] is not None:
                entry["backlinks"].append((row["uri"], row["first_seen"]))
    return out


def _query_thumbnail(data: bytes, name: str, settings) -> bytes:
    return thumbnail_jpeg(load_image(data, name=name, settings=settings, target_size=OVERLAY_SIDE).image,
                          max_side=OVERLAY_SIDE)


def shape_match(m: dict, detail: dict, base: str, token: str) -> dict:
    backlinks = [{"url": uri, "backlink": uri, "crawl_date": seen.strftime("%Y-%m-%d")}
                 for uri, seen in detail["backlinks"]]
    return {
        "image_url": f"{base}/api/images/{m['id']}/thumbnail",  # TinEye's image_url is its own copy too
        "domain": domain_of(m["uri"]),
        "score": m["score"],
        "width": m["width"], "height": m["height"], "size": m["width"] * m["height"],
        "format": detail["format"], "filesize": detail["file_size"],
        "overlay": f"{base}{PREFIX}overlay/{token}/{m['id']}",
        "tags": [],
        "backlinks": backlinks,
        # ours, beyond TinEye's fields (the client ignores them)
        "id": m["id"], "relation": m["relation"], "query_box": m["query_box"], "target_box": m["target_box"],
    }


def _sort_key(sort: str):
    if sort == "size":
        return lambda m: (m["size"], m["score"])
    if sort == "crawl_date":  # when the image was first seen anywhere
        return lambda m: (min((b["crawl_date"] for b in m["backlinks"]), default=""), m["score"])
    return lambda m: m["score"]


async def _search(request: Request, files: dict, fields: dict) -> JSONResponse:
    offset = int_field(fields, "offset", 0, 0, WINDOW)
    limit = int_field(fields, "limit", 100, 1, WINDOW)
    sort = _choice(fields, "sort", SORTS)
    order = _choice(fields, "order", ORDERS)
    data, name, _ = await image_from(request, files, fields, ("image_upload",), ("image_url",),
                                     "an image: a multipart file field 'image_upload' or an 'image_url'")
    started = time.perf_counter()
    svc = service(request)
    q, seconds = await fingerprinting(request, svc.query_fingerprint, data, name)
    thumb = await fingerprinting(request, _query_thumbnail, data, name, request.app.state.settings)
    wanted = min(offset + limit, WINDOW) if sort == "score" else WINDOW
    result = await anyio.to_thread.run_sync(functools.partial(
        svc.search, q, name, limit=wanted, min_score=0, fingerprint_s=seconds), limiter=request.app.state.searches)
    found = result["matches"]
    details = await in_thread(_details, svc.pool, [m["id"] for m in found])
    found = [m for m in found if m["id"] in details]  # deleted since the search: left out
    token = overlays(request).put(_Overlay(thumb, {m["id"]: (m["query_box"], m["target_box"]) for m in found}))
    base = str(request.base_url).rstrip("/")
    shaped = [shape_match(m, details[m["id"]], base, token) for m in found]
    shaped.sort(key=_sort_key(sort), reverse=order == "desc")  # stable: ties keep the score order
    page = shaped[offset:offset + limit]
    return ok({"matches": page}, query_time=f"{time.perf_counter() - started:.2f}", total_results=len(shaped),
              total_filtered_results=len(shaped), total_backlinks=sum(len(m["backlinks"]) for m in shaped),
              total_stock=0, total_collection=0)


@tineye_route(READ)
async def search_get(request: Request) -> JSONResponse:
    return await _search(request, {}, dict(request.query_params))


@tineye_route(READ)
async def search_post(request: Request) -> JSONResponse:
    return await _search(request, *await read_body(request))


# --- counts ---------------------------------------------------------------------------------------
@tineye_route(READ)
async def image_count(request: Request) -> JSONResponse:
    stats = await in_thread(service(request).stats)
    return ok(stats["counts"]["images"])


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


@tineye_route(READ)
async def remaining_searches(request: Request) -> JSONResponse:
    """A fixed answer: one bundle, IMGSEARCH_TINEYE_REMAINING searches, or UNLIMITED when unset.
    The number is not counted down: this server has no quota of its own."""
    remaining = request.app.state.settings.tineye_remaining or UNLIMITED
    expires = STARTED + timedelta(days=36525)  # a century: no expiry
    return ok({"bundles": [{"remaining_searches": remaining, "start_date": _date(STARTED),
                            "expire_date": _date(expires)}], "total_remaining_searches": remaining})
