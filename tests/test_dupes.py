"""`imgsearch dupes`: near-duplicate groups across the collection, best copy marked, per level."""

from __future__ import annotations

import json

import pytest
from helpers_ingest import PHOTOS, cli, encode, fresh_database, last_json
from PIL import Image, ImageDraw, ImageEnhance

from engine import db
from engine.dupes import LEVELS, find_groups, pair_params
from engine.queries import query


@pytest.fixture(scope="module")
def collection(pg_server, tmp_path_factory):
    """Two photos, each with edited copies, and unrelated photos."""
    url = fresh_database(pg_server, "dupes")
    folder = tmp_path_factory.mktemp("dupes")
    cat = Image.open(PHOTOS[0]).convert("RGB")
    big = cat.resize((cat.width * 2, cat.height * 2), Image.Resampling.LANCZOS)
    files = {
        "cat_big.png": encode(big, "PNG"),  # the most pixels: the best copy
        "cat.jpg": PHOTOS[0].read_bytes(),
        "cat_q40.jpg": encode(cat, "JPEG", quality=40),
        "cat_bright.jpg": encode(ImageEnhance.Brightness(cat).enhance(1.2), "JPEG", quality=90),
    }
    captioned = cat.copy()
    draw = ImageDraw.Draw(captioned)
    draw.rectangle((0, int(cat.height * 0.88), cat.width, cat.height), fill=(0, 0, 0))
    files["cat_caption.jpg"] = encode(captioned, "JPEG", quality=90)
    other = Image.open(PHOTOS[1]).convert("RGB")
    files["other_q95.jpg"] = encode(other, "JPEG", quality=95)  # same pixels: the larger file wins
    files["other_q60.jpg"] = encode(other, "JPEG", quality=60)
    for p in PHOTOS[2:8]:
        files[p.name] = p.read_bytes()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        r = cli("ingest", "--json", str(folder))
        assert r.returncode == 0 and last_json(r)["added"] == len(files), r.stderr
        yield folder


def names(group: dict) -> list[str]:
    return [img["uris"][0].rsplit("/", 1)[-1] for img in group["images"]]


def run(level: str) -> list[dict]:
    r = cli("dupes", "--json", "--level", level)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_normal_groups_light_edits_with_the_best_copy_first(collection):
    groups = run("normal")
    assert len(groups) == 2
    cat, other = groups
    assert names(cat)[0] == "cat_big.png" and cat["images"][0]["best"] and cat["best"] == cat["images"][0]["id"]
    assert set(names(cat)) >= {"cat_big.png", "cat.jpg", "cat_q40.jpg", "cat_bright.jpg"}
    assert not any(img["best"] for img in cat["images"][1:])
    assert names(other) == ["other_q95.jpg", "other_q60.jpg"]  # same pixel count: the larger file
    assert other["images"][0]["file_size"] > other["images"][1]["file_size"]


def test_levels_nest(collection):
    grouped = {level: {n for g in run(level) for n in names(g)} for level in LEVELS}
    assert grouped["strict"] <= grouped["normal"] <= grouped["loose"]
    assert {"cat.jpg", "cat_q40.jpg", "other_q95.jpg", "other_q60.jpg"} <= grouped["strict"]
    assert "cat_caption.jpg" in grouped["loose"]
    assert not any(p.name in grouped["loose"] for p in PHOTOS[2:8])  # unrelated photos stay out


def test_text_output_marks_the_best(collection):
    r = cli("dupes")
    assert r.returncode == 0 and "* id=" in r.stdout and "group(s)" in r.stdout


def test_the_self_join_is_exact(collection):
    """The MIH self-join finds exactly the pairs a brute-force comparison finds."""
    with db.connect() as conn:
        for level in LEVELS.values():
            brute = {(r["a"], r["b"]) for r in conn.execute(
                "select a.id as a, b.id as b from images a join images b on b.id > a.id "
                "where bit_count(a.phash # b.phash) <= %(r)s and bit_count(a.pdq # b.pdq) <= %(p)s",
                {"r": level.phash, "p": level.pdq})}
            found = {(r["a"], r["b"]) for r in conn.execute(query("dupe_pairs"), pair_params(level))}
            assert found == brute
        assert find_groups(conn, "normal")
