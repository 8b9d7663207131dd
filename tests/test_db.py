"""The foundation: embedded server lifecycle, migrations, status, named queries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import psycopg
import pytest

from engine import db
from engine.embedded import EmbeddedServer
from engine.errors import ConfigError, DatabaseUnavailableError
from engine.queries import all_queries, parse


def test_migrations_are_numbered_and_recorded(conn):
    versions = [m.version for m in db.migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    info = db.status(conn)
    assert info["schema_version"] == versions[-1]
    assert info["pgvector_version"] >= "0.7"
    assert int(info["server_version"].split(".")[0]) >= 14


def test_migrate_twice_is_a_no_op(conn):
    assert db.migrate(conn) == []
    assert db.migrate(conn) == []


def test_concurrent_migrations_apply_once(pg_server):
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
        admin.execute("drop database if exists t_concurrent with (force)")
        admin.execute("create database t_concurrent")
    url = pg_server.url("t_concurrent")
    results, errors = [], []

    def run():
        try:
            with db.raw_connect(url) as c:
                results.append(db.migrate(c))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in db.migrations()]  # each exactly once


def test_named_queries_parse():
    assert "server_versions" in all_queries()
    assert parse("-- name: a\nselect 1;\n-- name: b\n-- a comment\nselect 2;") == {
        "a": "select 1;", "b": "select 2;"}
    with pytest.raises(ValueError):
        parse("-- name: a\nselect 1;\n-- name: a\nselect 2;")


def _cli(home, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["IMGSEARCH_HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_db_lifecycle_on_a_new_home(tmp_path):
    """start on first use, reuse, status, stop; two processes starting at once share one server."""
    home = tmp_path / "home"
    procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "db", "status", "--json"],
                              env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                                   "IMGSEARCH_HOME": str(home)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    try:
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
            info = json.loads(out)
            assert info["embedded"] and info["schema_version"] >= 1
            assert info["counts"]["images"] == 0
            assert info["server_version"].startswith("18")
        pid_file = home / "pgdata" / "postmaster.pid"
        first_pid = pid_file.read_text().split()[0]
        again = _cli(home, "db", "status")
        assert again.returncode == 0 and "PostgreSQL 18" in again.stdout and "pgvector" in again.stdout
        assert pid_file.read_text().split()[0] == first_pid  # reused, not restarted
    finally:
        stop = _cli(home, "db", "stop", "--json")
    assert stop.returncode == 0 and json.loads(stop.stdout) == {"stopped": True}
    assert not EmbeddedServer(home).is_running()
    assert json.loads(_cli(home, "db", "stop", "--json").stdout) == {"stopped": False}


def test_start_and_stop_refuse_an_external_database(tmp_path):
    r = _cli(tmp_path, "db", "stop", env_extra={"DATABASE_URL": "postgresql://nobody@/x?host=/nonexistent"})
    assert r.returncode == 2 and "DATABASE_URL is set" in r.stderr


def test_unreachable_database_is_a_clear_error(tmp_path):
    r = _cli(tmp_path, "db", "status", env_extra={"DATABASE_URL": f"postgresql://nobody@/x?host={tmp_path}"})
    assert r.returncode == 2
    assert "cannot connect to PostgreSQL" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(DatabaseUnavailableError):
        db.raw_connect(f"postgresql://nobody@/x?host={tmp_path}")


def test_shared_buffers_default_to_a_share_of_memory(pg_server):
    from engine.embedded import SHARED_BUFFERS_MB, default_shared_buffers

    mb = int(default_shared_buffers().removesuffix("MB"))
    assert SHARED_BUFFERS_MB[0] <= mb <= SHARED_BUFFERS_MB[1]
    with psycopg.connect(pg_server.url("postgres")) as conn:
        row = conn.execute("select setting::int * 8 / 1024 from pg_settings where name = 'shared_buffers'").fetchone()
    shown = row[0]
    assert shown == mb  # the test session's server runs with the default


def test_shared_buffers_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_PG_SHARED_BUFFERS", "160MB")
    server = EmbeddedServer(tmp_path / "home")
    server.ensure_running()
    try:
        with psycopg.connect(server.url("postgres")) as conn:
            assert conn.execute("show shared_buffers").fetchone()[0] == "160MB"
    finally:
        server.stop()
    monkeypatch.setenv("IMGSEARCH_PG_SHARED_BUFFERS", "a lot")
    with pytest.raises(ConfigError, match="not a PostgreSQL size"):
        EmbeddedServer(tmp_path / "home2").ensure_running()
