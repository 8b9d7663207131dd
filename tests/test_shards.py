"""Scale out over 3 embedded PostgreSQL servers (docs/scale.md): a coordinator whose tables are
partitioned over postgres_fdw foreign tables, next to one server holding the same images.

Ingest spreads the images over every shard; every search answers as the single server does;
provenance edges join images of different shards; a shard that is stopped leaves a partial
answer (and fails writes clearly), and started again gives the full answer back.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers_ingest import fresh_database
from PIL import Image, ImageOps
from webserver import WRITE_KEY, LiveServer

from engine import db, fanout, shards
from engine.embedded import EmbeddedServer
from engine.errors import ConfigError, InputError, ShardUnavailableError
from engine.fingerprint import fingerprint, query_fingerprint
from engine.provenance import lineage, link_pending, pending_count
from engine.queries import query
from engine.search import search
from engine.store import Entry, delete, prepare, store, store_batch

POOL = Path(__file__).parent / "data" / "pool"
STORED = ["photos/gcompris__eiffelTower.jpg", "photos/skimage__chelsea.jpg", "photos/gcompris__scarlet_macaw.jpg",
          "photos/palapeli__cincinnati-bridge.jpg", "photos/skimage__coffee.jpg", "faces/matplotlib__grace_hopper.jpg",
          "photos/gcompris__tajMahal.jpg", "photos/tuxpaint__sheep.jpg", "icons/openclipart__elephant_01.png",
          "distractors/stellarium__barnard72.jpg", "photos/scratch__lake.jpg"]
UNRELATED = ["photos/kphotoalbum__snow.jpg", "photos/gcompris__sea3.jpg", "faces/face_recognition__obama.jpg"]


def jpeg(image: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def rgb(rel: str) -> Image.Image:
    return Image.open(POOL / rel).convert("RGB")


def derived() -> dict[str, bytes]:
    """Edits of stored photos, stored too: provenance has crops, copies and a composite to link."""
    bridge, taj, cat = rgb(STORED[3]), rgb(STORED[6]), rgb(STORED[1])
    w, h = bridge.size
    canvas = Image.new("RGB", (1200, 600), (248, 248, 246))
    for i, p in enumerate((taj.copy(), cat.copy())):
        p.thumbnail((570, 570))
        canvas.paste(p, (i * 600 + (600 - p.width) // 2, (600 - p.height) // 2))
    return {"bridge_crop": jpeg(bridge.crop((int(0.1 * w), int(0.15 * h), int(0.75 * w), int(0.85 * h)))),
            "bridge_small": jpeg(bridge.resize((w // 2, h // 2))),
            "taj_mirror": jpeg(ImageOps.mirror(taj)),
            "composite": jpeg(canvas)}


def queries() -> dict[str, bytes]:
    out = {rel: (POOL / rel).read_bytes() for rel in STORED + UNRELATED}
    eiffel, macaw, coffee = rgb(STORED[0]), rgb(STORED[2]), rgb(STORED[4])
    w, h = macaw.size
    out.update({"eiffel_mirror": jpeg(ImageOps.mirror(eiffel)), "eiffel_q40": jpeg(eiffel, 40),
                "macaw_crop": jpeg(macaw.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4))),
                "coffee_dark": jpeg(coffee.point(lambda v: v * 0.7))})
    return out


@pytest.fixture(scope="module")
def shard_servers(tmp_path_factory):
    servers = [EmbeddedServer(tmp_path_factory.mktemp(f"shard{i}")) for i in range(3)]
    for server in servers:
        server.ensure_running()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def fingerprints():
    fps = [(rel, fingerprint(POOL / rel)) for rel in STORED]
    fps += [(name, fingerprint(data, name=name)) for name, data in derived().items()]
    return fps


def store_all(conn, fps) -> dict[str, int]:
    """Two batches (COPY through the foreign partitions), then the same bytes again."""
    entries = [Entry(prepare(fp), f"https://example.org/{name}") for name, fp in fps]
    stored = store_batch(conn, entries[:7]) + store_batch(conn, entries[7:])
    again = store(conn, fps[0][1], "https://example.org/again")
    assert not again.created and again.image_id == stored[0].image_id
    conn.execute(query("analyze_tables"))
    conn.commit()
    return {name: s.image_id for (name, _), s in zip(fps, stored, strict=True)}


@pytest.fixture(scope="module")
def single(pg_server, fingerprints):
    url = fresh_database(pg_server, "shards_single")
    with db.raw_connect(url) as conn:
        db.migrate(conn)
        ids = store_all(conn, fingerprints)
        link_pending(conn)
    yield url, ids


@pytest.fixture(scope="module")
def coordinator(pg_server, shard_servers, fingerprints):
    url = fresh_database(pg_server, "shards_coordinator")
    with db.raw_connect(url) as conn:
        db.migrate(conn)
        for server in shard_servers:
            shards.add(conn, server.url())
        conn.commit()
        ids = store_all(conn, fingerprints)
        shards.sync_statistics(conn)
        link_pending(conn)
    yield url, ids


@pytest.fixture
def conn(coordinator):
    with db.raw_connect(coordinator[0]) as connection:
        yield connection


def shard_of(conn) -> dict[int, str]:
    rows = conn.execute("select i.id, c.relnamespace::regnamespace::text as shard "
                        "from images i join pg_class c on c.oid = i.tableoid").fetchall()
    return {r["id"]: r["shard"].removeprefix(shards.SCHEMA_PREFIX) for r in rows}


def test_ingest_spreads_the_images_over_every_shard_with_the_single_servers_ids(conn, coordinator, single,
                                                                                fingerprints):
    assert coordinator[1] == single[1]
    where = shard_of(conn)
    assert sorted(where) == sorted(coordinator[1].values())
    assert set(where.values()) == {"s1", "s2", "s3"}
    counts = {s["name"]: s["images"] for s in shards.status(conn)}
    assert sum(counts.values()) == len(fingerprints) and min(counts.values()) >= 2
    # every part of an image lives on its shard: the regions, keypoints, postings and URIs
    for table in ("regions", "image_keypoints", "keypoint_words", "image_uris"):
        rows = conn.execute(f"select t.image_id, c.relnamespace::regnamespace::text as shard from {table} t "  # noqa: S608
                            "join pg_class c on c.oid = t.tableoid").fetchall()
        assert rows and all(where[r["image_id"]] == r["shard"].removeprefix("shard_") for r in rows), table


def test_every_search_answers_as_the_single_server(conn, single):
    with db.raw_connect(single[0]) as one:
        for name, data in queries().items():
            q = query_fingerprint(data, name=name)
            expected = [m.to_json() for m in search(one, q)]
            outcome = fanout.search(conn, q)
            assert not outcome.partial and outcome.shards == ("s1", "s2", "s3")
            assert [m.to_json() for m in outcome.matches] == expected, name
            # the same SQL through the coordinator's foreign tables gives the same answer too
            assert [m.to_json() for m in search(conn, q)] == expected, name
            conn.commit()
    assert any(outcome.matches for outcome in [fanout.search(conn, query_fingerprint(queries()["macaw_crop"]))])


def test_provenance_edges_join_images_of_different_shards(conn, coordinator, single):
    ids, where = coordinator[1], shard_of(conn)
    edge_rows = conn.execute(query("edges_among"), {"ids": list(ids.values())}).fetchall()
    with db.raw_connect(single[0]) as one:
        expected = one.execute(query("edges_among"), {"ids": list(ids.values())}).fetchall()
    key = lambda r: (r["source_id"], r["derived_id"], r["relation"])  # noqa: E731
    assert sorted(map(key, edge_rows)) == sorted(map(key, expected)) and edge_rows
    assert any(where[r["source_id"]] != where[r["derived_id"]] for r in edge_rows)
    tree = lineage(conn, ids["bridge_crop"])
    assert ids[STORED[3]] in {a["id"] for a in tree["ancestors"]}


def test_adding_shards_is_refused_once_there_are_images(conn, tmp_path):
    with pytest.raises(ConfigError, match="holds images"):
        shards.add(conn, EmbeddedServer(tmp_path / "late").url())
    with pytest.raises(InputError, match="shard name"):
        shards.add(conn, "postgresql://postgres@/x?host=/nowhere", name="Bad-Name")


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DATABASE_URL": url})


def test_a_stopped_shard_gives_a_partial_answer_and_a_clear_write_error(conn, coordinator, shard_servers, tmp_path):
    ids, where = coordinator[1], shard_of(conn)
    on_s2 = next(rel for rel in STORED if where[ids[rel]] == "s2")
    on_other = next(rel for rel in STORED if where[ids[rel]] != "s2")
    conn.commit()  # no remote transaction left open on the shard that stops
    shard_servers[1].stop()
    try:
        gone = fanout.search(conn, query_fingerprint((POOL / on_s2).read_bytes()))
        assert gone.partial and gone.missing == ("s2",)
        assert all(where[m.id] != "s2" for m in gone.matches)
        assert gone.to_json() == {"partial": True, "missing_shards": ["s2"]}
        kept = fanout.search(conn, query_fingerprint((POOL / on_other).read_bytes()))
        assert kept.partial and kept.matches[0].id == ids[on_other] and kept.matches[0].relation == "duplicate"
        conn.commit()
        # writes: an image whose id routes it to s2 fails, with our error naming the shard, and
        # leaves nothing behind (the images routed to the other shards are stored as usual)
        caught = None
        for k in range(20):
            fp = fingerprint(jpeg(Image.radial_gradient("L").resize((64 + k, 64)).convert("RGB")), name=f"g{k}")
            try:
                store(conn, fp, f"https://example.org/new{k}")
            except psycopg.OperationalError as exc:
                conn.rollback()
                caught = exc
                break
        assert caught is not None
        error = shards.shard_error(caught)
        assert isinstance(error, ShardUnavailableError) and "shard s2" in error.message
        assert not conn.execute("select 1 from image_digests where sha256 = %s", (fp.sha256,)).fetchall()
        # linking needs every shard: the images stored meanwhile stay pending
        # (the fan-out's ShardUnavailableError, or the foreign tables' error that shard_error names)
        with pytest.raises((ShardUnavailableError, psycopg.OperationalError), match="s2"):
            link_pending(conn)
        conn.rollback()
        # the CLI says so too
        (tmp_path / "q.jpg").write_bytes((POOL / on_other).read_bytes())
        r = run_cli("search", "--json", str(tmp_path / "q.jpg"), url=coordinator[0])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert r.returncode == 0 and out["partial"] is True and out["missing_shards"] == ["s2"], r.stderr
        # and the HTTP API: a partial answer, and a write that fails with our error
        server = LiveServer(api_keys=(WRITE_KEY,), database_url=coordinator[0])
        try:
            with server.client(WRITE_KEY) as http:
                r = http.post("/api/search", files={"file": ("q.jpg", (POOL / on_other).read_bytes(), "image/jpeg")})
                assert r.status_code == 200 and r.json()["partial"] is True, r.text
                assert r.json()["missing_shards"] == ["s2"] and r.json()["matches"][0]["id"] == ids[on_other]
                codes = set()
                for k in range(20, 40):
                    data = jpeg(Image.radial_gradient("L").resize((64 + k, 64)).convert("RGB"))
                    r = http.post("/api/images", files={"file": (f"g{k}.jpg", data, "image/jpeg")})
                    codes.add(r.status_code)
                    if r.status_code == 503:
                        assert r.json()["error"]["code"] == "shard_unavailable", r.text
                        break
                assert 503 in codes
        finally:
            server.stop()
        listed = run_cli("db", "shards", "list", "--json", url=coordinator[0])
        assert listed.returncode == 2
        assert [s["up"] for s in json.loads(listed.stdout)["shards"]] == [True, False, True]
    finally:
        shard_servers[1].ensure_running()
    back = fanout.search(conn, query_fingerprint((POOL / on_s2).read_bytes()))
    assert link_pending(conn).linked >= 1 and pending_count(conn) == 0
    assert not back.partial and back.matches[0].id == ids[on_s2]
    r = run_cli("search", "--json", str(tmp_path / "q.jpg"), url=coordinator[0])
    assert json.loads(r.stdout.strip().splitlines()[-1])["partial"] is False


def test_one_server_searches_have_no_shard_keys(single):
    with db.raw_connect(single[0]) as one:
        outcome = fanout.search(one, query_fingerprint((POOL / STORED[0]).read_bytes()))
    assert outcome.shards == () and outcome.to_json() == {} and outcome.matches[0].score == 100


def test_cli_lists_and_migrates_the_shards(coordinator, fingerprints):
    r = run_cli("db", "shards", "list", "--json", url=coordinator[0])
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)["shards"]
    assert [s["name"] for s in listed] == ["s1", "s2", "s3"] and all(s["up"] for s in listed)
    assert sum(s["images"] for s in listed) >= len(fingerprints)
    r = run_cli("db", "shards", "migrate", "--json", url=coordinator[0])
    assert r.returncode == 0 and json.loads(r.stdout)["applied"] == {"s1": [], "s2": [], "s3": []}, r.stderr


def test_deleting_an_image_on_the_coordinator_removes_it_from_its_shard(conn, coordinator, shard_servers):
    ids, where = coordinator[1], shard_of(conn)
    victim = ids["bridge_crop"]
    assert conn.execute(query("edges_among"), {"ids": [victim, ids[STORED[3]]]}).fetchall()
    sha = conn.execute("select sha256 from images where id = %s", (victim,)).fetchone()["sha256"]
    delete(conn, victim)
    conn.commit()
    assert not conn.execute(query("edges_among"), {"ids": [victim, ids[STORED[3]]]}).fetchall()
    assert not conn.execute("select 1 from image_digests where sha256 = %s", (sha,)).fetchall()
    shard = shard_servers[int(where[victim][1:]) - 1]
    with db.raw_connect(shard.url()) as sconn:  # the shard's own foreign keys cascaded
        for table in ("regions", "keypoint_words", "image_uris", "image_keypoints"):
            assert not sconn.execute(f"select 1 from {table} where image_id = %s", (victim,)).fetchall()  # noqa: S608
    # the same bytes can be stored again, as a new image
    again = store(conn, fingerprint(derived()["bridge_crop"], name="again"), "https://example.org/again.jpg")
    assert again.created and again.image_id > max(ids.values())
