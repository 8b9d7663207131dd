"""Exact multi-index hashing: the probes and the lookup statement find every hash within r, no more."""

from __future__ import annotations

import random

import pytest

from engine import db, hamming
from engine.queries import query


def test_chunk_radii_satisfy_the_pigeonhole_bound():
    assert hamming.chunk_radii(10) == (3, 3, 2)
    assert hamming.chunk_radii(8) == (2, 2, 2)
    assert hamming.chunk_radii(6) == (2, 1, 1)
    assert hamming.chunk_radii(0) == (0, -1, -1)
    for r in range(0, 16):
        assert sum(t + 1 for t in hamming.chunk_radii(r)) == r + 1


def test_masks_and_chunks():
    assert len(hamming.masks(21, 2)) == 1 + 21 + 210
    value = (0x3FFFFF << 42) | (5 << 21) | 7
    assert hamming.chunks(value) == (0x3FFFFF, 5, 7)
    assert hamming.signed64(1 << 63) == -(1 << 63) and hamming.signed64(5) == 5


@pytest.fixture(scope="module")
def table(database_url):
    """3,000 images with random global pHashes and 4 regions each, many of them near-copies."""
    rnd = random.Random(7)
    seeds = [rnd.getrandbits(64) for _ in range(60)]
    hashes = []
    for _ in range(3000 * 5):
        base = rnd.choice(seeds) if rnd.random() < 0.6 else rnd.getrandbits(64)
        for _ in range(rnd.randrange(0, 12)):
            base ^= 1 << rnd.randrange(64)
        hashes.append(base)
    with db.connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality)"
                " values (%s, 1, 1, 'TEST', 0, %s::bit(64), %s::bit(64), %s::bit(64), %s::bit(256), 0)",
                [(i.to_bytes(32, "big"), "0" * 64, "0" * 64, f"{hashes[5 * i]:064b}", "0" * 256) for i in range(3000)])
            ids = [r["id"] for r in conn.execute("select id from images order by id")]
            cur.executemany(
                "insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash) values"
                " (%s, %s, %s, 0, 0, 1, 1, %s::bit(64))",
                [(ids[i], k, "global" if k == 0 else "picture", f"{hashes[5 * i + k]:064b}")
                 for i in range(3000) for k in range(5)])
        conn.commit()
    return {(ids[i], k): hashes[5 * i + k] for i in range(3000) for k in range(5)}


@pytest.mark.parametrize("radius", [0, 3, 6, 8, 10])
def test_lookup_is_exact(conn, table, radius):
    rnd = random.Random(radius)
    stored = list(table.values())
    queries = []
    for _ in range(12):
        h = rnd.choice(stored)
        for _ in range(rnd.randrange(0, 8)):
            h ^= 1 << rnd.randrange(64)
        queries.append(h)
    region = hamming.probes(queries, [radius] * len(queries))
    glob = hamming.probes(queries[:4], [radius + 2] * 4)
    no_words = {"words": [], "angles": [], "levels": [], "sides": [], "stop_share": 0.02, "stop_min": 20,
                "min_word_score": 1, "word_candidates": 1, "word_postings": 40000, "df_cap": 400}
    rows = conn.execute(query("lookup"), {**region.params("r"), **glob.params("g"), **no_words,
                                          "sha256": b"\0" * 32}).fetchall()
    got = {(r["qno"], r["image_id"], r["region_no"], r["distance"]) for r in rows if r["source"] == "hash"}
    want = set()
    for j, qv in enumerate(queries):
        for (image_id, k), sv in table.items():
            d = (qv ^ sv).bit_count()
            if d <= radius or (j < 4 and k == 0 and d <= radius + 2):
                want.add((j, image_id, k, d))
    assert got == want
    assert len(want) > 0
