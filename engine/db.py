"""Connections and schema migrations.

``database_url()`` is DATABASE_URL when set, else the embedded server (started on demand).
``connect()`` opens a connection with the schema migrated to the newest version.
Migrations are ``sql/migrations/NNNN_name.sql``, applied in order, each in its own
transaction and recorded in ``schema_migrations``; a session-level advisory lock makes
concurrent ``migrate()`` calls wait for each other instead of racing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.rows import dict_row

from . import pgarrays  # noqa: F401  (registers the binary array dumpers before any connection)
from .config import Settings, load_settings
from .embedded import EmbeddedServer
from .errors import DatabaseError, DatabaseUnavailableError
from .queries import query

MIN_SERVER_VERSION = 140000
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_migrated: set[str] = set()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("engine.sql.migrations").iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migrations share a number: {versions}")
    return found


def database_url(settings: Settings | None = None) -> str:
    settings = settings or load_settings()
    if settings.database_url:
        return settings.database_url
    return EmbeddedServer(settings.home).ensure_running()


def raw_connect(url: str, **kwargs) -> psycopg.Connection:
    try:
        return psycopg.connect(url, row_factory=dict_row, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc


def connect(settings: Settings | None = None, *, migrate_schema: bool = True, **kwargs) -> psycopg.Connection:
    url = database_url(settings)
    conn = raw_connect(url, **kwargs)
    if migrate_schema and url not in _migrated:
        migrate(conn)
        _migrated.add(url)
    return conn


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply every migration not yet recorded. Returns the versions applied now."""
    was_autocommit = conn.autocommit
    conn.commit()
    conn.autocommit = True
    applied_now: list[int] = []
    try:
        version = conn.execute("select current_setting('server_version_num')::int as v").fetchone()["v"]
        if version < MIN_SERVER_VERSION:
            raise DatabaseError(f"PostgreSQL {version // 10000} is too old: imgsearch needs 14 or newer")
        conn.execute(query("migration_lock"))
        try:
            conn.execute(query("create_migrations_table"))
            done = {row["version"] for row in conn.execute(query("applied_migrations"))}
            for mig in migrations():
                if mig.version in done:
                    continue
                with conn.transaction():
                    conn.execute(mig.sql)
                    conn.execute(query("record_migration"), {"version": mig.version, "name": mig.name})
                applied_now.append(mig.version)
        finally:
            conn.execute(query("migration_unlock"))
    except psycopg.errors.FeatureNotSupported as exc:  # pragma: no cover - depends on the server
        raise DatabaseError(f"migration failed: {exc}") from exc
    except psycopg.errors.UndefinedFile as exc:
        raise DatabaseError(f"the server lacks an extension imgsearch needs (pgvector >= 0.7?): {exc}") from exc
    finally:
        conn.autocommit = was_autocommit
    return applied_now


def status(conn: psycopg.Connection) -> dict:
    info = dict(conn.execute(query("server_versions")).fetchone())
    info["schema_version"] = conn.execute(query("schema_version")).fetchone()["version"]
    info["latest_schema_version"] = migrations()[-1].version
    info["counts"] = dict(conn.execute(query("table_counts")).fetchone())
    return info
