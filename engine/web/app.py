"""The Starlette app: one route table, the database pool opened in the lifespan, error handlers.

``create_app()`` reads the settings from the environment (engine.config); ``imgsearch serve``
runs it under uvicorn (``engine.cli_web``). Every API error is ``{"error": {"code", "message"}}``
with the status of the engine error (engine.errors); unexpected failures are a JSON 500 and are
logged, bad input never reaches them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import db, embedding
from ..config import Settings, load_settings
from ..errors import DatabaseUnavailableError, ImgsearchError
from ..queries import query
from ..shards import shard_error
from . import api, tineye
from .guard import Guard, Keys
from .metrics import Metrics
from .service import Service

log = logging.getLogger("imgsearch.web")
STATIC = Path(__file__).parent / "static"
SEARCHES_PER_PROCESS = 2
# the longest a request waits for a database connection: a busy pool hands one over within
# milliseconds, so a longer wait means PostgreSQL is down, and the client gets a 503 saying so
# well before IMGSEARCH_REQUEST_TIMEOUT (which would answer a vaguer "server busy")
DB_WAIT_S = 5.0


async def page(request: Request) -> FileResponse:
    """The web page: one HTML file for / and for /images/{id} (the script reads the path)."""
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


# The one route table. The OpenAPI document (/openapi.json) is built from the API routes here.
ROUTES = [
    Route("/api/search", api.search_get, methods=["GET"]),
    Route("/api/search", api.search_post, methods=["POST"]),
    Route("/api/similar", api.similar_get, methods=["GET"]),
    Route("/api/similar", api.similar_post, methods=["POST"]),
    Route("/api/images", api.list_images, methods=["GET"]),
    Route("/api/images", api.add_image, methods=["POST"]),
    Route("/api/images/random", api.random_image, methods=["GET"]),
    Route("/api/images/{id:int}", api.get_image, methods=["GET"]),
    Route("/api/images/{id:int}", api.delete_image, methods=["DELETE"]),
    Route("/api/images/{id:int}/thumbnail", api.thumbnail, methods=["GET"]),
    Route("/api/images/{id:int}/matches", api.image_matches, methods=["GET"]),
    Route("/api/images/{id:int}/lineage", api.image_lineage, methods=["GET"]),
    Route("/api/compare", api.compare, methods=["POST"]),
    Route("/api/stats", api.stats, methods=["GET"]),
    Route("/healthz", api.healthz, methods=["GET"]),
    Route("/metrics", api.metrics, methods=["GET"]),
    Route("/openapi.json", api.openapi_json, methods=["GET"]),
    # TinEye's REST shape (engine.web.tineye), for its clients: documented by TinEye and in README.md,
    # not in /openapi.json (its handlers carry no @operation; include_in_schema=False says so)
    Route("/rest/search/", tineye.search_get, methods=["GET"], include_in_schema=False),
    Route("/rest/search/", tineye.search_post, methods=["POST"], include_in_schema=False),
    Route("/rest/image_count/", tineye.image_count, methods=["GET"], include_in_schema=False),
    Route("/rest/remaining_searches/", tineye.remaining_searches, methods=["GET"], include_in_schema=False),
    Route("/rest/overlay/{token:str}/{id:int}", tineye.overlay, methods=["GET"], include_in_schema=False),
    Route("/", page, methods=["GET"], include_in_schema=False),
    Route("/images/{id:int}", page, methods=["GET"], include_in_schema=False),
    Route("/similar", page, methods=["GET"], include_in_schema=False),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]


def _json_error(status: int, code: str, message: str, headers: dict | None = None,
                request: Request | None = None) -> JSONResponse:
    if request is not None and tineye.is_tineye(request.url.path):  # TinEye's clients need TinEye's errors
        return tineye.error_response(status, message, headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def on_engine_error(request: Request, exc: ImgsearchError) -> JSONResponse:
    headers = {"www-authenticate": 'Bearer realm="imgsearch"'} if exc.http_status == 401 else None
    if exc.http_status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, exc.code, exc.message)
    return _json_error(exc.http_status, exc.code, exc.message, headers, request)


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"nothing at {request.url.path}"
    return _json_error(exc.status_code, code, str(message), dict(exc.headers or {}), request)


async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    shard = shard_error(exc) if isinstance(exc, psycopg.Error) else None
    if shard is not None:  # a write to a shard that is down (docs/scale.md)
        return _json_error(503, shard.code, shard.message, {"retry-after": "5"}, request)
    return _json_error(503, DatabaseUnavailableError.code, f"the database is unavailable: {str(exc).strip()}",
                       {"retry-after": "5"}, request)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal_error", "an unexpected error occurred; it has been logged",
                       request=request)


def _open_pool(settings: Settings) -> ConnectionPool:
    """Start the embedded server if needed, migrate, and open the pool (blocking)."""
    with db.connect(settings):  # migrates the schema once
        pass
    timeout_ms = str(int(settings.request_timeout_s * 1000))

    def configure(conn: psycopg.Connection) -> None:
        conn.execute(query("set_statement_timeout"), {"ms": timeout_ms})
        conn.commit()

    pool = ConnectionPool(db.database_url(settings), min_size=1, max_size=settings.db_pool_size,
                          kwargs={"row_factory": dict_row}, configure=configure,
                          check=ConnectionPool.check_connection,
                          timeout=min(DB_WAIT_S, settings.request_timeout_s / 2),
                          name="imgsearch", open=False)
    pool.open(wait=True, timeout=30)
    return pool


def _warm_up_embeddings() -> None:
    """Load the similar-images network once, off the request path (a first request would wait seconds)."""
    try:
        embedding.network()
    except Exception:  # noqa: BLE001 - a request will report the problem properly
        log.exception("could not load the similar-images network")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    holder: dict[str, ConnectionPool] = {}

    def pool_stats() -> dict:
        pool = holder.get("pool")
        return {(k,): v for k, v in pool.get_stats().items()} if pool is not None else {}

    metrics = Metrics(pool_stats)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        pool = await anyio.to_thread.run_sync(_open_pool, settings)
        holder["pool"] = pool
        if settings.semantic and embedding.available():  # torch and the weights load while the server starts
            threading.Thread(target=_warm_up_embeddings, name="imgsearch-embedding-warm-up", daemon=True).start()
        app.state.service = Service(settings, pool, metrics)
        app.state.fingerprints = anyio.CapacityLimiter(1)  # CPU-bound: one fingerprint at a time per process
        # searches (SQL, then CPU-bound verification) at once per process: more only adds contention
        app.state.searches = anyio.CapacityLimiter(SEARCHES_PER_PROCESS)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(pool.close)

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(Guard, settings=settings, metrics=metrics)],
        exception_handlers={ImgsearchError: on_engine_error, HTTPException: on_http_error,
                            PoolTimeout: on_database_down, psycopg.OperationalError: on_database_down,
                            Exception: on_unexpected},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = Keys(settings)
    app.state.metrics = metrics
    return app
