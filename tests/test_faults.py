"""Faults, on real processes: PostgreSQL stopped under a running server, and `kill -9` of the server
in the middle of writes. (`kill -9` of an ingest run: tests/test_ingest.py.)

The database here is an embedded PostgreSQL of this module's own (a Unix socket, no TCP), so
that stopping it does not disturb the other tests' server.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from helpers_ingest import PHOTOS, variants
from psycopg.rows import dict_row
from serveproc import ServeProcess
from webserver import WRITE_KEY

from engine.embedded import EmbeddedServer


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory):
    server = EmbeddedServer(tmp_path_factory.mktemp("faultpg"))
    server.ensure_running()
    yield server
    server.stop()


def rows(url: str, statement: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(statement).fetchall()


def test_database_stopped_under_a_running_server_then_back(own_pg, tmp_path):
    url = own_pg.ensure_running()
    server = ServeProcess({"DATABASE_URL": url, "IMGSEARCH_API_KEYS": WRITE_KEY}, tmp_path / "serve.log").start()
    photo, other = PHOTOS[0].read_bytes(), PHOTOS[1].read_bytes()
    try:
        with server.client(WRITE_KEY, timeout=60) as client:
            assert client.post("/api/images", content=photo, params={"uri": "https://example.org/a.jpg"}).status_code \
                == 201
            assert client.post("/api/search", content=photo).json()["matches"][0]["score"] == 100

            assert own_pg.stop()
            for attempt in range(2):  # and again: the server does not wedge
                started = time.monotonic()
                search = client.post("/api/search", content=photo)
                waited = time.monotonic() - started
                assert search.status_code == 503, search.text
                error = search.json()["error"]
                assert error["code"] == "database_unavailable" and "database is unavailable" in error["message"]
                assert search.headers["retry-after"]
                assert waited < 15, f"a search waited {waited:.1f} s for a database that is down"
                if attempt == 0:
                    assert client.post("/api/images", content=other).status_code == 503
                    assert client.get("/healthz").status_code == 503
                    assert client.get("/api/stats").status_code == 503
            assert server.proc.poll() is None

            own_pg.ensure_running()  # back, and the same server process serves again
            deadline = time.monotonic() + 30
            while (search := client.post("/api/search", content=photo)).status_code != 200:
                assert search.status_code == 503 and time.monotonic() < deadline, search.text
                time.sleep(0.5)
            assert search.json()["matches"][0]["score"] == 100
            added = client.post("/api/images", content=other, params={"uri": "https://example.org/b.jpg"})
            assert added.status_code == 201, added.text
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/stats").json()["counts"]["images"] == 2
    finally:
        server.stop()


def test_kill_9_of_the_server_during_writes(own_pg, tmp_path):
    url = own_pg.ensure_running()
    with psycopg.connect(own_pg.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists killed with (force)")
        conn.execute("create database killed")
    url = own_pg.url("killed")
    files = variants(tmp_path / "images", 24)
    env = {"DATABASE_URL": url, "IMGSEARCH_API_KEYS": WRITE_KEY}
    server = ServeProcess(env, tmp_path / "serve.log").start()
    acknowledged: dict[str, int] = {}  # uri -> image id, for every add the server answered 200/201
    lock = threading.Lock()
    stop = threading.Event()

    def writer(chunk: list[Path]) -> None:
        with server.client(WRITE_KEY, timeout=30) as client:
            for path in chunk:
                for copy in ("a", "b"):  # the same bytes twice: one image, two URIs
                    if stop.is_set():
                        return
                    uri = f"https://example.org/{path.name}#{copy}"
                    try:
                        r = client.post("/api/images", content=path.read_bytes(), params={"uri": uri})
                    except httpx.HTTPError:  # killed under us
                        return
                    if r.status_code in (200, 201):
                        with lock:
                            acknowledged[uri] = r.json()["id"]

    threads = [threading.Thread(target=writer, args=(files[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while len(acknowledged) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill9()  # in the middle of the writes
        stop.set()
        for t in threads:
            t.join(60)
        killed_after = dict(acknowledged)
        print(f"\nkilled after {len(killed_after)} acknowledged adds of {2 * len(files)}")
        assert 10 <= len(killed_after) < 2 * len(files), "the kill did not land in the middle of the writes"

        server = ServeProcess(env, tmp_path / "serve2.log").start()
        check_consistent(url, server)
        stored = {r["uri"]: r["image_id"] for r in rows(url, "select uri, image_id from image_uris")}
        for uri, image_id in killed_after.items():  # every acknowledged add survived the kill
            assert stored.get(uri) == image_id, uri

        with server.client(WRITE_KEY) as client:  # send everything again: nothing doubles
            for path in files:
                for copy in ("a", "b"):
                    r = client.post("/api/images", content=path.read_bytes(),
                                    params={"uri": f"https://example.org/{path.name}#{copy}"})
                    assert r.status_code in (200, 201), r.text
        check_consistent(url, server)
        distinct = {hashlib.sha256(p.read_bytes()).digest() for p in files}  # small photos repeat
        assert {bytes(r["sha256"]) for r in rows(url, "select sha256 from images")} == distinct
        assert rows(url, "select count(*) as n from image_uris")[0]["n"] == 2 * len(files)
    finally:
        stop.set()
        server.stop()


def check_consistent(url: str, server: ServeProcess) -> None:
    """No partial image, no duplicate, and the server's counts are the tables' counts."""
    broken = rows(url, """
        select i.id from images i
        where not exists (select 1 from regions r where r.image_id = i.id and r.region_no = 0)
           or not exists (select 1 from image_uris u where u.image_id = i.id)
           or i.thumbnail is null
           or (exists (select 1 from image_keypoints k where k.image_id = i.id)
               <> exists (select 1 from keypoint_words w where w.image_id = i.id))""")
    assert broken == [], f"partial images after the kill: {broken}"
    counts = rows(url, "select count(*) as n, count(distinct sha256) as d from images")[0]
    assert counts["n"] == counts["d"], "a duplicate image"
    assert rows(url, "select count(*) as n from (select uri from image_uris group by uri having count(*) > 1) d")[0][
        "n"] == 0
    with server.client() as client:
        stats = client.get("/api/stats").json()["counts"]
    assert stats["images"] == counts["n"]
    assert stats["uris"] == rows(url, "select count(*) as n from image_uris")[0]["n"]
