"""Store and search on a real database with real photos: copies, edits, crops, composites, negatives."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps

from engine import db
from engine import search as searchmod
from engine.compare import hash_hits
from engine.fingerprint import fingerprint, query_fingerprint
from engine.search import search
from engine.store import delete, store

POOL = Path(__file__).parent / "data" / "pool"
STORED = ["photos/gcompris__eiffelTower.jpg", "photos/skimage__chelsea.jpg", "photos/gcompris__scarlet_macaw.jpg",
          "photos/palapeli__cincinnati-bridge.jpg", "photos/skimage__coffee.jpg", "faces/matplotlib__grace_hopper.jpg",
          "photos/gcompris__tajMahal.jpg", "photos/tuxpaint__sheep.jpg", "icons/openclipart__elephant_01.png",
          "distractors/stellarium__barnard72.jpg", "distractors/stellarium__n5139.jpg"]
UNRELATED = ["photos/scratch__lake.jpg", "photos/kphotoalbum__snow.jpg", "photos/gcompris__sea3.jpg",
             "faces/face_recognition__obama.jpg"]


def jpeg(image: Image.Image, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def rgb(rel: str) -> Image.Image:
    return Image.open(POOL / rel).convert("RGB")


@pytest.fixture(scope="module")
def stored(database_url):
    with db.connect() as conn:
        ids = {rel: store(conn, fingerprint(POOL / rel), str(POOL / rel)).image_id for rel in STORED}
    return ids


@pytest.fixture(scope="module")
def conn(stored):
    with db.connect() as connection:
        yield connection


def find(conn, data: bytes, **kw):
    return search(conn, query_fingerprint(data, name="query"), **kw)


def test_storing_the_same_bytes_twice_adds_a_uri_not_an_image(conn, stored):
    rel = STORED[0]
    again = store(conn, fingerprint(POOL / rel), "https://example.org/copy.jpg")
    assert not again.created and again.image_id == stored[rel]
    matches = find(conn, (POOL / rel).read_bytes())
    assert matches[0].id == stored[rel] and matches[0].relation == "duplicate" and matches[0].score == 100
    assert set(matches[0].uris) == {str(POOL / rel), "https://example.org/copy.jpg"}


@pytest.mark.parametrize("edit", ["resize", "jpeg", "color", "gray", "mirror", "rot90", "border"])
def test_edited_copies_are_near_duplicates(conn, stored, edit):
    rel = "photos/gcompris__scarlet_macaw.jpg"
    im = rgb(rel)
    edited = {
        "resize": lambda: im.resize((im.width // 3, im.height // 3)),
        "jpeg": lambda: im,
        "color": lambda: ImageEnhance.Contrast(ImageEnhance.Color(im).enhance(0.4)).enhance(1.3),
        "gray": lambda: im.convert("L"),
        "mirror": lambda: ImageOps.mirror(im),
        "rot90": lambda: im.rotate(90, expand=True),
        "border": lambda: ImageOps.expand(im, border=(40, 20, 40, 80), fill=(200, 30, 30)),
    }[edit]()
    matches = find(conn, jpeg(edited, quality=20 if edit == "jpeg" else 88))
    assert matches and matches[0].id == stored[rel], edit
    best = matches[0]
    assert best.relation in ("near_duplicate", "contains")
    assert best.mirrored == (edit == "mirror")
    assert best.rotated == (edit == "rot90")


@pytest.mark.parametrize("box", [(0.1, 0.2, 0.8, 0.9), (0.4, 0.3, 0.95, 0.85), (0.05, 0.05, 0.45, 0.45)])
def test_crops_are_found_where_they_were_cut(conn, stored, box):
    rel = "photos/palapeli__cincinnati-bridge.jpg"
    im = rgb(rel)
    w, h = im.size
    crop = im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    matches = find(conn, jpeg(crop))
    assert matches and matches[0].id == stored[rel]
    assert matches[0].relation == "crop"
    assert matches[0].target_box == pytest.approx(box, abs=0.04)
    assert matches[0].query_box == pytest.approx((0, 0, 1, 1), abs=0.04)


def test_threads_change_nothing_but_the_time(conn, stored, monkeypatch):
    """A query fingerprinted and verified in threads (engine/threads.py) or in one gives the same
    fingerprint and the same matches, scores and boxes."""
    im = rgb("photos/palapeli__cincinnati-bridge.jpg")
    w, h = im.size
    data = jpeg(im.crop((w // 10, h // 5, w * 7 // 10, h * 9 // 10)))
    answers = []
    for count in ("1", "2"):
        monkeypatch.setenv("IMGSEARCH_SEARCH_THREADS", count)
        q = query_fingerprint(data, name="query")
        answers.append((q.fp.regions, q.fp.keypoints.descriptors.tobytes(), q.mirrored_keypoints.descriptors.tobytes(),
                        [m.to_json() for m in search(conn, q)]))
    assert answers[0] == answers[1] and answers[0][3]


def test_screening_changes_nothing_but_the_time(conn, stored, monkeypatch):
    """Candidates verified after a screening pass (verify.screened), here all of them, give the
    same matches, scores and boxes as candidates verified in full at once: a crop, a mirrored
    crop, and unrelated photos (whose candidates the screening rejects)."""
    im = rgb("photos/palapeli__cincinnati-bridge.jpg")
    w, h = im.size
    crop = im.crop((w // 4, h // 5, w * 3 // 4, h * 4 // 5))
    queries = [jpeg(crop), jpeg(crop.transpose(Image.FLIP_LEFT_RIGHT))] + [jpeg(rgb(rel)) for rel in UNRELATED]
    answers = []
    for first_screened in (10**6, 0):
        monkeypatch.setattr(searchmod, "SCREEN_FROM_RANK", first_screened)
        answers.append([[m.to_json() for m in find(conn, data)] for data in queries])
    assert answers[0] == answers[1]
    assert answers[0][0] and answers[0][1] and not any(answers[0][2:])


def test_a_composite_finds_each_part_and_where_it_lies(conn, stored):
    parts = ["photos/gcompris__tajMahal.jpg", "photos/skimage__chelsea.jpg"]
    canvas = Image.new("RGB", (1200, 600), (250, 250, 250))
    for i, rel in enumerate(parts):
        p = rgb(rel)
        p.thumbnail((580, 580))
        canvas.paste(p, (i * 600 + 10, (600 - p.height) // 2))
    matches = find(conn, jpeg(canvas))
    by_id = {m.id: m for m in matches}
    for i, rel in enumerate(parts):
        m = by_id[stored[rel]]
        assert m.relation == "composite"
        assert m.target_box == pytest.approx((0, 0, 1, 1), abs=0.05)
        centre = (m.query_box[0] + m.query_box[2]) / 2
        assert (centre < 0.5) == (i == 0)


def test_unrelated_photos_match_nothing(conn, stored):
    for rel in UNRELATED:
        assert find(conn, (POOL / rel).read_bytes()) == [], rel


@pytest.fixture(scope="module")
def star_pair():
    """Two star fields (a bright round blob on black): m5 re-encoded as a query, m63's fingerprint."""
    q = query_fingerprint(jpeg(rgb("distractors/stellarium__m5.jpg"), 75), name="query")
    return q, fingerprint(POOL / "distractors/stellarium__m63-vasey.jpg")


def test_star_fields_that_hash_alike_do_not_match(conn, stored, star_pair):
    """Star fields hash alike: m5's pHash, turned, is within 4 bits of m63's, and within 6 of the
    picture region around m63's blob, while their PDQs are far apart. The old rules took the close
    pHash for a copy, then (PDQ asked of copies only) two turns of m5 on that one region for two
    regions that agree."""
    q, other_fp = star_pair
    turn = min(q.phash_variants, key=lambda v: q.phash_variants[v] - other_fp.phash)
    assert q.phash_variants[turn] - other_fp.phash <= 4  # the premise: a close pHash ...
    assert q.pdq_variants[turn] - other_fp.pdq > searchmod.PDQ_CONFIRM_BITS  # ... that PDQ contradicts
    pictures = [r for r in other_fp.regions if r.kind == "picture"]
    assert any(v - r.hash <= searchmod.REGION_TRUSTED_BITS["picture"] for r in pictures
               for v in q.phash_variants.values())  # ... and a close picture region
    other = store(conn, other_fp, "m63").image_id
    try:
        assert all(m.id != other for m in search(conn, q))
    finally:
        delete(conn, other)


def test_confirm_parts_on_pdq_and_leave_unseen_parts_counting(star_pair):
    """confirm_parts on its own: the star pair's whole query against m63's picture region (the hit
    the search found), with m63's real thumbnail, with none, and with bytes that are no image; and
    against m5's own stored PDQ."""
    q, other_fp = star_pair
    picture = next(r for r in other_fp.regions if r.kind == "picture")
    turn = min(q.phash_variants, key=lambda v: q.phash_variants[v] - picture.hash)
    qh = searchmod.QueryHash(0, "global", searchmod.FULL_BOX, turn, q.phash_variants[turn])
    verdict = searchmod.Verdict(None, 85, 6, ("picture",), regions=((qh, "picture", picture.box, 6),))
    details = {"pdq": other_fp.pdq.bitstring(), "width": other_fp.width, "height": other_fp.height}
    assert searchmod.confirm_parts(q, verdict, details, other_fp.thumbnail) is None
    assert searchmod.confirm_parts(q, verdict, details, None) is verdict
    assert searchmod.confirm_parts(q, verdict, details, b"not a jpeg") is verdict
    own = fingerprint(POOL / "distractors/stellarium__m5.jpg")  # against m5 itself, the parts agree
    mine = searchmod.QueryHash(0, "global", searchmod.FULL_BOX, "identity", q.phash_variants["identity"])
    verdict = searchmod.Verdict(None, 85, 6, ("picture",), regions=((mine, "global", searchmod.FULL_BOX, 0),))
    assert searchmod.confirm_parts(q, verdict, {"pdq": own.pdq.bitstring()}, own.thumbnail) is verdict


def test_agreeing_regions_count_only_where_pdq_does_not_contradict_them(conn, stored):
    """m101 (re-encoded) against n5033, two star fields: a cut-out and picture regions agree on one
    geometry, so the regions alone made a match; the picture hits' parts are 88-94 PDQ bits apart.
    Without them the cut-out (4 bits) is no match alone. A close cut-out would be."""
    q = query_fingerprint(jpeg(rgb("distractors/stellarium__m101-vasey.jpg"), 75), name="query")
    other_fp = fingerprint(POOL / "distractors/stellarium__n5033-vasey.jpg")
    cand = hash_hits(q, other_fp)
    details = {"width": other_fp.width, "height": other_fp.height, "pdq": other_fp.pdq.bitstring(), "keypoints": None}
    verdict = searchmod.judge(q, cand, details)
    assert verdict is not None and set(verdict.evidence) == {"cutout", "picture"}  # the premise
    assert searchmod.confirm_parts(q, verdict, details, other_fp.thumbnail) is None
    cutout = next(h for h in verdict.regions if h[1] == "cutout")
    pictures = [h for h in verdict.regions if h[1] == "picture" or h[0].kind == "picture"]
    close = (cutout[0], cutout[1], cutout[2], 0)  # the same cut-out, were it identical: trusted alone
    again = searchmod.confirm_parts(q, replace(verdict, regions=(close, *pictures)), details, other_fp.thumbnail)
    assert again is not None and again.evidence == ("cutout",)
    other = store(conn, other_fp, "n5033").image_id
    try:
        assert all(m.id != other for m in search(conn, q))
    finally:
        delete(conn, other)


def test_a_picture_found_inside_a_stored_collage_is_still_confirmed(conn, stored, monkeypatch):
    """The whole query on one picture region of a stored collage, with no keypoints to help: the
    region's verdict stands, its two parts agreeing by PDQ (the query's, the collage thumbnail's)."""
    monkeypatch.setattr(searchmod, "feature_checks", lambda *args, **kwargs: None)
    parts = [rgb(rel).resize((320, 240)) for rel in ("photos/scratch__lake.jpg", "photos/kphotoalbum__snow.jpg")]
    collage = Image.new("RGB", (680, 260), (255, 255, 255))
    collage.paste(parts[0], (10, 10))
    collage.paste(parts[1], (350, 10))
    collage_fp = fingerprint(jpeg(collage))
    assert sum(r.kind == "picture" for r in collage_fp.regions) >= 2
    cid = store(conn, collage_fp, "collage").image_id
    try:
        matches = [m for m in find(conn, jpeg(parts[1].resize((400, 300)))) if m.id == cid]
        assert matches and matches[0].relation in ("composite", "crop") and matches[0].evidence == ("picture",)
        assert matches[0].target_box[0] > 0.45  # the right-hand cell
    finally:
        delete(conn, cid)


def test_limit_and_min_score(conn, stored):
    rel = "photos/skimage__coffee.jpg"
    assert len(find(conn, (POOL / rel).read_bytes(), limit=1)) == 1
    assert find(conn, (POOL / rel).read_bytes(), min_score=101) == []


def test_deleting_an_image_removes_it_from_results(conn, stored):
    rel = "photos/tuxpaint__sheep.jpg"
    delete(conn, stored[rel])
    assert all(m.id != stored[rel] for m in find(conn, (POOL / rel).read_bytes()))
    counts = db.status(conn)["counts"]
    assert counts["images"] == len(STORED) - 1


def seamless_collage(source: str, others: list[str], position: int, cell=(400, 300)) -> bytes:
    """A 3 x 2 grid of pictures cut to the cells' shape, edge to edge (no gutters to find them by)."""
    pics = [rgb(rel) for rel in others]
    pics.insert(position, rgb(source))
    canvas = Image.new("RGB", (cell[0] * 3, cell[1] * 2), "white")
    for i, pic in enumerate(pics):
        canvas.paste(ImageOps.fit(pic, cell, Image.LANCZOS), ((i % 3) * cell[0], (i // 3) * cell[1]))
    return jpeg(canvas, 90)


def test_one_cell_of_a_seamless_collage_is_found_by_guided_verification(conn, stored, monkeypatch):
    """The cell holds ~1/6 of the query's keypoints: the fit is right but short of the threshold
    until that cell is described on its own."""
    others = ["photos/gcompris__hammer1.jpg", "photos/gcompris__kitten.jpg", "photos/gcompris__saturn.jpg",
              "photos/scratch__lake.jpg", "photos/gcompris__sea3.jpg"]  # none of them stored
    data = seamless_collage(STORED[0], others, position=2)
    matches = find(conn, data)
    assert matches and matches[0].id == stored[STORED[0]]
    assert matches[0].relation in ("composite", "contains") and "keypoints" in matches[0].evidence
    # where the picture lies in the collage: the top right cell
    assert matches[0].query_box == pytest.approx((2 / 3, 0.0, 1.0, 0.5), abs=0.04)
    assert matches[0].target_box[2] - matches[0].target_box[0] > 0.6  # most of the Eiffel tower photo's width
    monkeypatch.setattr(searchmod, "GUIDE_PER_QUERY", 0)
    assert stored[STORED[0]] not in [m.id for m in find(conn, data)]  # what the guided pass adds
