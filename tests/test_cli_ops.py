"""`imgsearch stats`, `export --json` and `delete ID|URI...` on a real database, through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers_ingest import PHOTOS, cli, fresh_database, last_json

from engine import db


@pytest.fixture(scope="module")
def stored(pg_server, tmp_path_factory):
    """Three photos (one of them under two names) and a CSV row's metadata."""
    url = fresh_database(pg_server, "cli_ops")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        folder = tmp_path_factory.mktemp("ops")
        for p in PHOTOS[:3]:
            shutil.copy(p, folder / p.name)
        shutil.copy(PHOTOS[0], folder / "again.jpg")
        (folder / "meta.csv").write_text(f"uri,title\n{PHOTOS[1].name},Bridge\n")
        r = cli("ingest", "--json", "--csv", str(folder / "meta.csv"), str(folder))
        assert r.returncode == 0, r.stderr
        assert last_json(r)["added"] == 3
        yield folder


def test_stats_counts_and_sizes(stored):
    r = cli("stats", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["images"], info["uris"]) == (3, 4)
    assert info["regions"] >= 3 and info["images_with_keypoints"] == 3
    assert info["database_bytes"] > 0
    assert {"images", "regions", "image_uris", "keypoint_words"} <= set(info["tables"])
    assert info["indexes"]["regions_mih_c0"]["table"] == "regions" and info["indexes"]["regions_mih_c0"]["bytes"] > 0
    assert info["tables"]["regions"]["index_bytes"] >= info["indexes"]["regions_mih_c0"]["bytes"]
    text = cli("stats")
    assert text.returncode == 0 and "images:" in text.stdout and "regions_mih_c0" in text.stdout


def test_export_one_line_per_image(stored):
    r = cli("export", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3 and [x["id"] for x in lines] == sorted(x["id"] for x in lines)
    by_name = {min(u.rsplit("/", 1)[-1] for u in x["uris"]): x for x in lines}
    first = by_name["again.jpg"]
    assert sorted(first["uris"]) == sorted(str((stored / n).resolve()) for n in ("again.jpg", PHOTOS[0].name))
    assert by_name[PHOTOS[1].name]["metadata"] == {"title": "Bridge"}
    for x in lines:
        hashes = x["hashes"]
        assert len(hashes["phash"]) == 16 and len(hashes["pdq"]) == 64 and len(x["sha256"]) == 64
        assert all(len(reg["phash"]) == 16 and len(reg["box"]) == 4 for reg in hashes["regions"])
    # the same hashes as `imgsearch hash`
    hashed = json.loads(cli("hash", "--json", str(stored / "again.jpg")).stdout)
    assert (first["hashes"]["phash"], first["hashes"]["pdq"]) == (hashed["phash"], hashed["pdq"])
    later = cli("export", "--json", "--after-id", str(lines[0]["id"]))
    assert len(later.stdout.splitlines()) == 2


def test_delete_by_id_and_by_uri(stored):
    lines = [json.loads(line) for line in cli("export", "--json").stdout.splitlines()]
    by_id = next(x for x in lines if not any(u.endswith("again.jpg") for u in x["uris"]))
    r = cli("delete", "--json", str(by_id["id"]), str(stored / "again.jpg"), "424242", "/no/such/uri.jpg")
    assert r.returncode == 1, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["deleted"] for o in out] == [True, True, False, False]
    assert out[0]["id"] == by_id["id"] and sorted(out[0]["uris"]) == sorted(by_id["uris"])
    assert str((stored / "again.jpg").resolve()) in out[1]["uris"] and len(out[1]["uris"]) == 2
    with db.connect() as conn:
        left = conn.execute("select count(*) as n from images").fetchone()["n"]
        orphans = conn.execute("select count(*) as n from regions r where not exists "
                               "(select 1 from images i where i.id = r.image_id)").fetchone()["n"]
    assert left == 1 and orphans == 0
    assert cli("delete", "--json", str(out[0]["id"])).returncode == 1  # gone already


def test_export_into_a_pipe_closed_early(pg_server, monkeypatch):
    """`imgsearch export --json | head -n 1` on more rows than a pipe holds: no traceback."""
    monkeypatch.setenv("DATABASE_URL", fresh_database(pg_server, "cli_ops_pipe"))
    with db.connect() as conn:
        conn.execute("""
            insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality)
            select sha256(int8send(g)), 10, 10, 'PNG', 100, b, b, b, b || b || b || b, 0
            from generate_series(1, 3000) g, lateral (select (g * 2654435761)::bit(64) as b) h""")
        conn.commit()
    r = subprocess.run(f"{sys.executable} -m engine.cli export --json | head -n 1", shell=True, capture_output=True,
                       text=True, env=dict(os.environ), timeout=120)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert "Traceback" not in r.stderr and "Error" not in r.stderr, r.stderr
