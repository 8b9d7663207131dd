"""Visual-word votes (engine/wordvotes.py) and the word frequencies they weigh words by
(migration 0008), on a real database with real photos."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from engine import db, search
from engine import keypoints as kpmod
from engine.fingerprint import fingerprint, query_fingerprint
from engine.store import Entry, delete, prepare, store, store_batch

POOL = Path(__file__).parent / "data" / "pool"
STORED = ["photos/gcompris__eiffelTower.jpg", "photos/skimage__chelsea.jpg", "photos/gcompris__scarlet_macaw.jpg",
          "photos/palapeli__cincinnati-bridge.jpg", "photos/skimage__coffee.jpg", "photos/gcompris__tajMahal.jpg"]
MORE = ["photos/tuxpaint__sheep.jpg", "photos/gcompris__kitten.jpg", "photos/scratch__lake.jpg"]

COUNTS_DIFFER = """
select count(*) as n from (select word, count(*)::int as postings from keypoint_words group by word) counted
full join word_frequencies kept using (word)
where counted.postings is distinct from kept.postings
"""


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stored(database_url):
    with db.connect() as conn:
        return {rel: store(conn, fingerprint(POOL / rel), str(POOL / rel)).image_id for rel in STORED}


@pytest.fixture(scope="module")
def conn(stored):
    with db.connect() as connection:
        yield connection


def frequencies(conn) -> dict[int, int]:
    return {r["word"]: r["postings"] for r in conn.execute("select word, postings from word_frequencies")}


def test_word_frequencies_follow_every_insert_and_delete(conn, stored):
    assert conn.execute(COUNTS_DIFFER).fetchone()["n"] == 0 and frequencies(conn)
    before = frequencies(conn)
    # a batch (COPY), then deletes: by the engine, and by SQL cascading from images
    fps = [fingerprint(POOL / rel) for rel in MORE]
    added = store_batch(conn, [Entry(prepare(fp), str(POOL / rel)) for fp, rel in zip(fps, MORE, strict=True)])
    conn.commit()
    assert conn.execute(COUNTS_DIFFER).fetchone()["n"] == 0 and frequencies(conn) != before
    delete(conn, added[0].image_id)
    conn.execute("delete from images where id = any(%s)", ([s.image_id for s in added[1:]],))
    conn.commit()
    assert frequencies(conn) == before  # words no image has any more are gone, not left at 0
    conn.commit()


def test_a_truncate_forgets_the_frequencies(conn):
    conn.execute("create temporary table saved_postings as select * from keypoint_words")
    conn.execute("truncate keypoint_words")
    assert frequencies(conn) == {}
    conn.execute("insert into keypoint_words select * from saved_postings")
    conn.commit()
    assert conn.execute(COUNTS_DIFFER).fetchone()["n"] == 0 and frequencies(conn)
    conn.commit()


def reference_scores(conn, q) -> dict[int, tuple[float, set[int]]]:
    """Weak geometric consistency written out plainly: {image: (best bin's summed idf, sides of
    the bins reaching it)}, every query word kept (a small collection: no budget or stop word)."""
    images = conn.execute("select count(*) as n from images").fetchone()["n"]
    sides = [(side, kpmod.postings(kp, mirror=side == 1))
             for side, kp in enumerate((q.fp.keypoints, q.mirrored_keypoints)) if kp is not None]
    words = sorted({int(w) for _, p in sides for w in p.word})
    rows = conn.execute("select word, image_id, angle, level from keypoint_words where word = any(%s)",
                        (words,)).fetchall()
    postings = defaultdict(list)
    for r in rows:
        postings[r["word"]].append((r["image_id"], r["angle"], r["level"]))
    bins = defaultdict(set)  # (image, side, shift, turn, zoom) -> words voting for it
    for side, p in sides:
        for word, angle, level in zip(p.word.tolist(), p.angle.tolist(), p.level.tolist(), strict=True):
            for image, s_angle, s_level in postings.get(word, ()):
                for shift in (0, 1):
                    turn = ((s_angle - angle + 16 * shift) & 255) >> 5
                    zoom = min(max((s_level - level + 64 + 2 * shift) >> 2, 0), 39)
                    bins[(image, side, shift, turn, zoom)].add(word)
    df = {w: len(v) for w, v in postings.items()}

    def idf(word: int) -> float:
        return math.log(max(images, df[word] + 1) / (df[word] + 1)) + 0.1

    best: dict[int, tuple[float, set[int]]] = {}
    for (image, side, *_), voters in bins.items():
        s = sum(idf(w) for w in voters)
        if image not in best or s > best[image][0] + 1e-9:
            best[image] = (s, {side})
        elif abs(s - best[image][0]) <= 1e-9:
            best[image][1].add(side)
    return best


@pytest.mark.parametrize("edit", ["crop", "mirror", "unrelated"])
def test_votes_equal_the_plain_reference(conn, stored, edit):
    photo = Image.open(POOL / STORED[2]).convert("RGB")
    w, h = photo.size
    image = {"crop": lambda: photo.crop((w // 5, h // 6, w * 4 // 5, h * 5 // 6)),
             "mirror": lambda: ImageOps.mirror(photo),
             "unrelated": lambda: Image.open(POOL / MORE[2]).convert("RGB")}[edit]()
    q = query_fingerprint(jpeg(image), name=edit)
    got = {i: c for i, c in search.lookup(conn, q, search.DEFAULT_RADIUS).items() if c.word_side is not None}
    want = reference_scores(conn, q)
    want = {i: v for i, v in want.items() if v[0] >= search.MIN_WORD_SCORE}
    assert set(got) == set(want)  # fewer than WORD_CANDIDATES images: all of them
    for image_id, cand in got.items():
        score, sides = want[image_id]
        assert abs(cand.shared_words - score * 10) <= 0.5 + 1e-6 and cand.word_side in sides
    if edit != "unrelated":
        top = max(got.values(), key=lambda c: c.shared_words)
        assert top.image_id == stored[STORED[2]] and top.word_side == (1 if edit == "mirror" else 0)
