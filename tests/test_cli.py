"""The CLI contract the evaluation tools rely on: hash, ingest DIR, search --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

POOL = Path(__file__).parent / "data" / "pool"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for rel in ["photos/skimage__chelsea.jpg", "photos/gcompris__eiffelTower.jpg", "icons/openclipart__bunny_01.png"]:
        shutil.copy(POOL / rel, d / Path(rel).name)
    (d / "sub").mkdir()
    shutil.copy(POOL / "photos/skimage__coffee.jpg", d / "sub" / "coffee.jpg")
    (d / "notes.txt").write_text("not an image, and not named like one: skipped")
    return d


def test_hash_prints_one_json_object_per_file_and_reports_bad_ones(folder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    r = run("hash", "--json", str(folder / "skimage__chelsea.jpg"), str(bad), str(folder / "openclipart__bunny_01.png"))
    assert r.returncode == 1
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(folder / "skimage__chelsea.jpg"), str(bad),
                                               str(folder / "openclipart__bunny_01.png")]
    good = lines[0]
    for key in ("sha256", "width", "height", "ahash", "dhash", "phash", "pdq", "pdq_quality", "regions"):
        assert key in good
    assert len(good["phash"]) == 16 and len(good["pdq"]) == 64 and len(good["sha256"]) == 64
    for region in good["regions"]:
        assert set(region) == {"kind", "box", "phash"} and len(region["box"]) == 4
    assert lines[1]["error"]["code"] == "decode_error" and "broken.jpg" in lines[1]["error"]["message"]
    assert "error" not in lines[2]


def test_ingest_a_folder_then_search_by_file(folder, database_url, tmp_path):
    r = run("ingest", "--json", str(folder))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["added"] == 4 and summary["failed"] == 0

    again = json.loads(run("ingest", "--json", str(folder)).stdout.strip().splitlines()[-1])
    assert again["added"] == 0 and again["duplicates"] == 4

    cat = Image.open(folder / "skimage__chelsea.jpg")
    w, h = cat.size
    crop = tmp_path / "crop.jpg"
    cat.crop((w // 4, h // 4, w * 3 // 4, h * 3 // 4)).save(crop, quality=90)
    r = run("search", "--json", "--limit", "5", str(crop), str(folder / "sub" / "coffee.jpg"))
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first["query"] == str(crop)
    best = first["matches"][0]
    assert best["uri"] == str((folder / "skimage__chelsea.jpg").resolve())
    assert best["relation"] == "crop" and 0 < best["score"] <= 100
    for key in ("id", "distance", "query_box", "target_box"):
        assert key in best
    assert second["matches"][0]["relation"] == "duplicate"

    readable = run("search", str(crop))
    assert readable.returncode == 0 and "crop" in readable.stdout and "skimage__chelsea.jpg" in readable.stdout


def test_search_with_a_bad_file_reports_it_and_goes_on(folder, database_url, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    r = run("search", "--json", str(empty), str(folder / "skimage__chelsea.jpg"))
    assert r.returncode == 1
    bad, good = (json.loads(line) for line in r.stdout.splitlines())
    assert bad["error"]["code"] == "empty_input"
    assert good["matches"]


def test_ingest_reports_bad_files_with_exit_status_1(database_url, tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    shutil.copy(POOL / "photos/skimage__camera.jpg", tmp_path / "camera.jpg")
    r = run("ingest", "--json", str(tmp_path))
    assert r.returncode == 1
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["added"] + summary["duplicates"] == 1 and summary["failed"] == 1
    assert summary["errors"][0]["path"].endswith("zero.jpg") and summary["errors"][0]["code"] == "empty_input"


def test_hash_and_search_by_url_from_a_loopback_server(folder, database_url, tmp_path):
    """URLs go through the safe fetcher: refused on loopback by default, fetched when allowed."""
    from webserver import FileServer

    server = FileServer(folder)
    url = server.url("skimage__chelsea.jpg")
    assert run("ingest", str(folder)).returncode == 0  # stored already if the tests above ran
    try:
        refused = run("hash", "--json", url)
        assert refused.returncode == 1
        assert json.loads(refused.stdout)["error"]["code"] == "url_refused"

        os.environ["IMGSEARCH_ALLOW_PRIVATE_URLS"] = "1"
        try:
            hashed = run("hash", "--json", url)
            searched = run("search", "--json", url)
        finally:
            del os.environ["IMGSEARCH_ALLOW_PRIVATE_URLS"]
    finally:
        server.stop()
    assert hashed.returncode == 0 and json.loads(hashed.stdout)["file"] == url
    assert searched.returncode == 0, searched.stderr
    best = json.loads(searched.stdout)["matches"][0]
    assert best["uri"].endswith("skimage__chelsea.jpg") and best["relation"] == "duplicate"
