"""The whole fingerprint of real images: what is stored, its bounds, its stability."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.errors import EmptyInputError
from engine.fingerprint import fingerprint, query_fingerprint, to_json
from engine.hashes import DIHEDRAL_NAMES, phash
from engine.pdq import pdq_hash

POOL = Path(__file__).parent / "data" / "pool"
CAT = POOL / "photos" / "skimage__chelsea.jpg"


def test_fingerprint_of_a_photo_is_complete_and_consistent():
    fp = fingerprint(CAT)
    image = Image.open(CAT).convert("RGB")
    assert (fp.width, fp.height) == image.size and fp.format == "JPEG"
    assert fp.phash == phash(image)
    assert (fp.pdq, fp.pdq_quality) == pdq_hash(image)
    assert len(fp.sha256) == 32 and fp.file_size == CAT.stat().st_size
    assert fp.keypoints is not None and 50 <= len(fp.keypoints) <= 500
    assert len(fp.regions) <= 40
    for region in fp.regions:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and region.hash.bits == 64
    assert fp.thumbnail[:2] == b"\xff\xd8" and len(fp.thumbnail) < 40_000


def test_fingerprint_is_deterministic_and_hex_at_the_edge():
    a, b = to_json(fingerprint(CAT), "cat"), to_json(fingerprint(CAT.read_bytes(), name="cat"), "cat")
    assert a == b
    assert a["phash"] == "b15fe6465121175e"  # pinned: hex at the edge
    assert all(len(r["phash"]) == 16 for r in a["regions"])


def test_query_fingerprint_adds_transformed_hashes_and_mirrored_keypoints():
    q = query_fingerprint(CAT)
    assert list(q.phash_variants) == list(DIHEDRAL_NAMES) and q.phash_variants["identity"] == q.fp.phash
    assert set(q.pdq_variants) == set(DIHEDRAL_NAMES)
    mirrored = Image.open(CAT).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert q.phash_variants["mirror"] == phash(mirrored)
    assert q.mirrored_keypoints is not None and len(q.mirrored_keypoints) > 0


def test_a_bad_input_raises_our_error_naming_it():
    with pytest.raises(EmptyInputError, match="nothing.png"):
        fingerprint(b"", name="nothing.png")
