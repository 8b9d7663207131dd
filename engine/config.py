"""Configuration from environment variables, with documented defaults.

| variable                     | default                                              | meaning                        |
|------------------------------|------------------------------------------------------|--------------------------------|
| DATABASE_URL                 | (unset: embedded PostgreSQL)                         | PostgreSQL >= 14 with pgvector |
| IMGSEARCH_HOME               | $XDG_DATA_HOME/imgsearch or ~/.local/share/imgsearch | embedded server data, logs     |
| IMGSEARCH_PG_SHARED_BUFFERS  | 1/6 of memory, 128MB-4GB (engine.embedded)           | embedded server shared_buffers |
| IMGSEARCH_MAX_PIXELS         | 90000000                                             | decompression-bomb limit       |
| IMGSEARCH_MAX_BYTES          | 52428800 (50 MiB)                                    | largest image file accepted    |
| IMGSEARCH_ALLOW_PRIVATE_URLS | 0 (off)                                              | 1: fetch private/loopback URLs |
| IMGSEARCH_FETCH_TIMEOUT      | 10                                                   | seconds per URL fetch, in all  |
| IMGSEARCH_API_KEYS           | (unset: writes refused)                              | write keys (comma-separated)   |
| IMGSEARCH_READ_KEYS          | (unset: reads open)                                  | read keys (comma-separated)    |
| IMGSEARCH_MAX_UPLOAD_BYTES   | 52428800 (50 MiB)                                    | largest HTTP request body      |
| IMGSEARCH_REQUEST_TIMEOUT    | 30                                                   | seconds per HTTP request       |
| IMGSEARCH_DB_POOL_SIZE       | 8                                                    | connections per server process |
| IMGSEARCH_TINEYE_REMAINING   | (unset: no quota)                                    | /rest/remaining_searches/ count|
| IMGSEARCH_SEMANTIC           | 1 (on when the 'semantic' extra is installed)        | 0: store no embeddings         |
| IMGSEARCH_SEARCH_THREADS     | the number of cores, at most 4                       | threads for a query's faces and|
|                              |                                                      | verification (1: the caller's) |

URL fetches (engine.fetch) are also bounded by IMGSEARCH_MAX_BYTES, and follow at most
``Settings.max_redirects`` (5, not configurable) redirects. IMGSEARCH_ALLOW_PRIVATE_URLS accepts
1/0, true/false, yes/no, on/off; IMGSEARCH_FETCH_TIMEOUT may be fractional (2.5).

The HTTP server (engine.web): a write (storing or deleting an image) needs one of
IMGSEARCH_API_KEYS; reads need one of IMGSEARCH_READ_KEYS or IMGSEARCH_API_KEYS when
IMGSEARCH_READ_KEYS is set, and are open otherwise. Keys are compared in constant time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a positive, finite number of seconds")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be 1 or 0 (or true/false, yes/no, on/off)")


def _keys(name: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())
    for key in keys:
        if len(key) < 16:
            raise ConfigError(f"{name}: every key must have at least 16 characters")
    return keys


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imgsearch"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    max_pixels: int
    max_bytes: int
    # the URL fetcher (engine.fetch); defaults so code that builds Settings by hand keeps working
    allow_private_urls: bool = False
    fetch_timeout_s: float = 10.0
    max_redirects: int = 5
    # the HTTP server (engine.web)
    api_keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    max_upload_bytes: int = 50 * 1024 * 1024
    request_timeout_s: float = 30.0
    db_pool_size: int = 8
    # the TinEye-compatible API (engine.web.tineye): the fixed /rest/remaining_searches/ answer
    tineye_remaining: int | None = None  # None: no quota
    # similar images (engine.embedding): new images get an embedding when the extra is installed, unless off
    semantic: bool = True
    # engine.threads: threads for a query's faces and verification (shared by the searches of a process)
    search_threads: int = 1

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def load_settings() -> Settings:
    """Read the environment now (not at import), so tests and commands can change it."""
    home = os.environ.get("IMGSEARCH_HOME", "").strip()
    return Settings(
        database_url=os.environ.get("DATABASE_URL", "").strip() or None,
        home=Path(home).expanduser().resolve() if home else default_home(),
        max_pixels=_int("IMGSEARCH_MAX_PIXELS", 90_000_000),
        max_bytes=_int("IMGSEARCH_MAX_BYTES", 50 * 1024 * 1024),
        allow_private_urls=_bool("IMGSEARCH_ALLOW_PRIVATE_URLS", False),
        fetch_timeout_s=_float("IMGSEARCH_FETCH_TIMEOUT", 10.0),
        api_keys=_keys("IMGSEARCH_API_KEYS"),
        read_keys=_keys("IMGSEARCH_READ_KEYS"),
        max_upload_bytes=_int("IMGSEARCH_MAX_UPLOAD_BYTES", 50 * 1024 * 1024),
        request_timeout_s=_float("IMGSEARCH_REQUEST_TIMEOUT", 30.0),
        db_pool_size=_int("IMGSEARCH_DB_POOL_SIZE", 8),
        tineye_remaining=_int("IMGSEARCH_TINEYE_REMAINING", 0) or None,
        semantic=_bool("IMGSEARCH_SEMANTIC", True),
        search_threads=max(1, _int("IMGSEARCH_SEARCH_THREADS", min(4, os.cpu_count() or 1))),
    )
