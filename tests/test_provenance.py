"""Provenance on a real database with real photos: edges and their direction, lineage, relink, delete.

A family is derived from photos of tests/data/pool (crops, a crop of a crop, a smaller copy, a
mirrored copy, a composite, an unrelated photo) and stored in an order where derived images come
before their sources, as they may in a real collection.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from engine import db
from engine.errors import NotFoundError
from engine.fingerprint import fingerprint, query_fingerprint
from engine.provenance import (
    Edge,
    lineage,
    lineage_of_query,
    link,
    link_pending,
    pending_count,
    relink,
)
from engine.queries import query
from engine.store import delete, store

POOL = Path(__file__).parent / "data" / "pool" / "photos"
# stored in this order: derived images before their sources
ORDER = ["cropcrop", "composite", "small", "mirror", "bridge", "crop", "taj", "cat", "lake"]


def crop(im: Image.Image, box) -> Image.Image:
    w, h = im.size
    return im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def save(im: Image.Image, path: Path, quality: int = 75) -> Path:
    im.convert("RGB").save(path, "JPEG", quality=quality)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("family")
    out = {}
    for name, rel in (("bridge", "palapeli__cincinnati-bridge.jpg"), ("taj", "gcompris__tajMahal.jpg"),
                      ("cat", "skimage__chelsea.jpg"), ("lake", "scratch__lake.jpg")):
        out[name] = d / rel
        out[name].write_bytes((POOL / rel).read_bytes())  # originals: the pool's own JPEGs (quality 85)
    bridge = Image.open(out["bridge"]).convert("RGB")
    c = crop(bridge, (0.1, 0.15, 0.75, 0.85))
    out["crop"] = save(c, d / "crop.jpg")
    out["cropcrop"] = save(crop(c, (0.2, 0.2, 0.8, 0.85)), d / "cropcrop.jpg")
    out["small"] = save(bridge.resize((bridge.width // 2, bridge.height // 2)), d / "small.jpg")
    taj = Image.open(out["taj"]).convert("RGB")
    out["mirror"] = save(ImageOps.mirror(taj), d / "mirror.jpg")
    canvas = Image.new("RGB", (1200, 600), (248, 248, 246))
    for i, name in enumerate(("taj", "cat")):
        p = Image.open(out[name]).convert("RGB")
        p.thumbnail((570, 570))
        canvas.paste(p, (i * 600 + (600 - p.width) // 2, (600 - p.height) // 2))
    out["composite"] = save(canvas, d / "composite.jpg")
    return out


@pytest.fixture(scope="module")
def ids(database_url, files) -> dict[str, int]:
    with db.connect() as conn:
        out = {name: store(conn, fingerprint(files[name]), str(files[name])).image_id for name in ORDER}
        summary = link_pending(conn)
        assert summary.linked == len(ORDER)
    return out


@pytest.fixture(scope="module")
def conn(ids):
    with db.connect() as connection:
        yield connection


def edges(conn, ids: dict[str, int]) -> set[tuple[str, str, str]]:
    names = {v: k for k, v in ids.items()}
    rows = conn.execute(query("edges_among"), {"ids": list(ids.values())}).fetchall()
    return {(names[r["source_id"]], names[r["derived_id"]], r["relation"]) for r in rows}


def parents(tree: dict) -> set[int]:
    return {a["id"] for a in tree["ancestors"]}


def children(tree: dict) -> set[int]:
    return {d["id"] for d in tree["descendants"]}


def test_crops_point_from_the_source_to_the_crop(conn, ids):
    found = edges(conn, ids)
    assert ("bridge", "crop", "crop") in found
    assert ("crop", "cropcrop", "crop") in found
    # the crop of a crop was stored first: its edge to the original is still source -> derived
    assert ("bridge", "cropcrop", "crop") in found


def test_the_smaller_copy_is_derived_and_the_mirrored_copy_from_its_original(conn, ids):
    found = edges(conn, ids)
    assert ("bridge", "small", "near_duplicate") in found  # fewer pixels
    assert ("taj", "mirror", "near_duplicate") in found  # same size, lower JPEG quality (75 < 85)
    row = next(r for r in conn.execute(query("edges_among"), {"ids": [ids["taj"], ids["mirror"]]}).fetchall())
    assert row["mirrored"] and row["scale"] == pytest.approx(1.0, abs=0.03)


def test_a_composite_is_derived_from_each_of_its_sources(conn, ids):
    found = edges(conn, ids)
    assert ("taj", "composite", "composite") in found
    assert ("cat", "composite", "composite") in found
    tree = lineage(conn, ids["composite"])
    by_id = {a["id"]: a for a in tree["ancestors"]}
    assert set(by_id) == {ids["taj"], ids["cat"]}
    # where each source lies in the composite: taj on the left, the cat on the right
    assert (by_id[ids["taj"]]["query_box"][0] + by_id[ids["taj"]]["query_box"][2]) / 2 < 0.5
    assert (by_id[ids["cat"]]["query_box"][0] + by_id[ids["cat"]]["query_box"][2]) / 2 > 0.5
    assert by_id[ids["cat"]]["target_box"] == pytest.approx([0, 0, 1, 1], abs=0.05)
    assert by_id[ids["taj"]]["transform"]["scale"] == pytest.approx(570 / 640, rel=0.05)  # shrunk into its cell


def test_unrelated_photos_have_no_edges(conn, ids):
    tree = lineage(conn, ids["lake"])
    assert tree["ancestors"] == [] and tree["descendants"] == []


def test_star_fields_that_hash_alike_are_not_linked(conn, ids):
    """Two star fields whose pHashes (turned) and picture regions are close, but not their PDQs:
    linking them stores no edge either way (engine.search.confirmed, as in a search)."""
    stars = Path(__file__).parent / "data" / "pool" / "distractors"
    star_ids = [store(conn, fingerprint(stars / f"stellarium__{name}.jpg"), name).image_id
                for name in ("m63-vasey", "m5")]
    try:
        for image_id in star_ids:
            link(conn, image_id)
        assert conn.execute(query("edges_among"), {"ids": star_ids}).fetchall() == []
    finally:
        for image_id in star_ids:
            delete(conn, image_id)


def test_lineage_nests_to_the_depth_asked(conn, ids):
    tree = lineage(conn, ids["cropcrop"], depth=1)
    assert tree["image"] == {"id": ids["cropcrop"], "uri": tree["image"]["uri"]}
    assert tree["image"]["uri"].endswith("cropcrop.jpg")
    # the edge bridge -> cropcrop is implied by bridge -> crop -> cropcrop: the crop is the parent
    assert parents(tree) == {ids["crop"]}
    assert tree["ancestors"][0]["ancestors"] == []
    entry = lineage(conn, ids["cropcrop"], depth=2)["ancestors"][0]
    assert set(entry) >= {"id", "uri", "relation", "score", "query_box", "target_box", "ancestors"}
    assert entry["relation"] == "crop" and entry["query_box"] == pytest.approx([0, 0, 1, 1], abs=0.03)
    assert [a["id"] for a in entry["ancestors"]] == [ids["bridge"]]

    down = lineage(conn, ids["bridge"], depth=1)
    assert children(down) == {ids["crop"], ids["small"]}
    crop_entry = next(d for d in down["descendants"] if d["id"] == ids["crop"])
    assert crop_entry["descendants"] == []
    assert crop_entry["query_box"] == pytest.approx([0.1, 0.15, 0.75, 0.85], abs=0.03)  # where the crop was cut
    deeper = next(d for d in lineage(conn, ids["bridge"], depth=2)["descendants"] if d["id"] == ids["crop"])
    assert [d["id"] for d in deeper["descendants"]] == [ids["cropcrop"]]
    assert lineage(conn, ids["bridge"], depth=0) == {"image": down["image"], "ancestors": [], "descendants": []}
    with pytest.raises(NotFoundError):
        lineage(conn, 10**9)


def test_lineage_of_an_unstored_image_answers_from_a_search(conn, ids, files, tmp_path):
    part = save(crop(Image.open(files["cropcrop"]).convert("RGB"), (0.1, 0.1, 0.9, 0.9)), tmp_path / "part.jpg")
    tree = lineage_of_query(conn, query_fingerprint(part), depth=3, uri=str(part))
    assert tree["image"] == {"id": None, "uri": str(part)}
    assert parents(tree) == {ids["cropcrop"]}
    chain = tree["ancestors"][0]
    assert [a["id"] for a in chain["ancestors"]] == [ids["crop"]]
    assert [a["id"] for a in chain["ancestors"][0]["ancestors"]] == [ids["bridge"]]
    # a stored image asked by its bytes answers as itself
    assert lineage_of_query(conn, query_fingerprint(files["crop"]))["image"]["id"] == ids["crop"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_cli_lineage_json_and_text(ids, files, tmp_path):
    part = save(crop(Image.open(files["crop"]).convert("RGB"), (0.3, 0.3, 0.9, 0.9)), tmp_path / "part.jpg")
    r = run("lineage", "--json", "--depth", "2", str(part))
    assert r.returncode == 0, r.stderr
    tree = json.loads(r.stdout)
    assert set(tree) == {"image", "ancestors", "descendants"}
    assert tree["image"]["id"] is None
    assert parents(tree) == {ids["crop"]}
    assert [a["id"] for a in tree["ancestors"][0]["ancestors"]] == [ids["bridge"]]
    assert tree["ancestors"][0]["ancestors"][0]["ancestors"] == []  # depth 2

    r = run("lineage", "--json", str(ids["bridge"]))
    assert r.returncode == 0, r.stderr
    assert children(json.loads(r.stdout)) == {ids["crop"], ids["small"]}

    r = run("lineage", str(files["crop"]))
    assert r.returncode == 0, r.stderr
    assert f"is a crop of #{ids['bridge']} " in r.stdout and f"has a crop #{ids['cropcrop']} " in r.stdout

    r = run("lineage", "999999999")
    assert r.returncode == 1 and "no image with id" in r.stderr


def test_relink_recomputes_every_edge(conn, ids):
    before = edges(conn, ids)
    wrong = Edge(ids["lake"], ids["bridge"], "crop", 50, (0, 0, 1, 1), (0, 0, 1, 1), 1.0, 0.0, 0.0)
    with conn.transaction():
        conn.execute(query("upsert_edge"), wrong.row())
    assert ("lake", "bridge", "crop") in edges(conn, ids)
    summary = relink(conn)
    assert summary.linked == len(ids) and pending_count(conn) == 0
    assert edges(conn, ids) == before


def test_linking_in_worker_processes_stores_the_same_edges(conn, ids):
    before = edges(conn, ids)
    summary = relink(conn, workers=2)
    assert summary.linked == len(ids) and pending_count(conn) == 0
    assert edges(conn, ids) == before


def test_an_interrupted_link_run_resumes(conn, ids):
    with conn.transaction():
        conn.execute(query("reset_links"))
    assert pending_count(conn) == len(ids)
    link(conn, ids["bridge"])  # as if a run stopped after one image
    assert pending_count(conn) == len(ids) - 1
    assert link_pending(conn).linked == len(ids) - 1
    assert pending_count(conn) == 0 and link_pending(conn).linked == 0


def test_deleting_an_image_removes_its_edges(conn, ids, files, tmp_path):
    copy = save(Image.open(files["cat"]), tmp_path / "cat_copy.jpg", quality=40)
    extra = store(conn, fingerprint(copy), str(copy)).image_id
    link(conn, extra)
    assert ids["cat"] in parents(lineage(conn, extra))
    assert extra in children(lineage(conn, ids["cat"]))
    delete(conn, extra)
    assert extra not in children(lineage(conn, ids["cat"]))
    assert conn.execute(query("edges_among"), {"ids": [extra, ids["cat"]]}).fetchall() == []
    conn.commit()  # the delete's word counts stay locked until then: the next test's ingest would wait


def test_ingest_links_unless_told_not_to(database_url, files, tmp_path):
    folder = tmp_path / "more"
    folder.mkdir()
    save(crop(Image.open(files["taj"]).convert("RGB"), (0.2, 0.1, 0.8, 0.9)), folder / "taj_crop.jpg")
    r = run("ingest", "--json", "--no-link", str(folder))
    assert r.returncode == 0, r.stderr
    assert "linked" not in json.loads(r.stdout.strip().splitlines()[-1])
    r = run("relink", "--pending", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["linked"] == 1
    save(ImageOps.mirror(Image.open(folder / "taj_crop.jpg")), folder / "taj_crop_mirror.jpg")
    r = run("ingest", "--json", str(folder))
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["added"] == 1 and summary["linked"] == 1 and summary["edges"] >= 1


def test_jpeg_quality_is_read_from_the_quantisation_table():
    from engine.relations import jpeg_quality

    im = Image.open(POOL / "scratch__lake.jpg")
    for q in (20, 50, 75, 90, 95):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        assert jpeg_quality(Image.open(io.BytesIO(buf.getvalue())).quantization[0]) == q
