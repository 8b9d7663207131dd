"""Configuration from environment variables, with documented defaults.

| variable                | default                                  | meaning                         |
|-------------------------|------------------------------------------|---------------------------------|
| DATABASE_URL            | (unset: embedded PostgreSQL)             | any PostgreSQL >= 14 + pgvector |
| IMGSEARCH_HOME          | $XDG_DATA_HOME/imgsearch or ~/.local/share/imgsearch | embedded server data, logs |
| IMGSEARCH_MAX_PIXELS    | 90000000                                 | decompression-bomb limit        |
| IMGSEARCH_MAX_BYTES     | 52428800 (50 MiB)                        | largest image file accepted     |
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


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imgsearch"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    max_pixels: int
    max_bytes: int

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
    )
