"""Which of two matched images is the source: the rules of engine.relations on hand-made matches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.model import Match
from engine.relations import ImageInfo, classify, keeps_long, lesser_copy, siblings

RELATIONS = ("near_duplicate", "crop", "composite")


def match(relation: str, query_box, target_box, mirrored: bool = False, score: int = 90) -> Match:
    return Match(id=2, uri=None, uris=(), score=score, relation=relation, distance=None, query_box=query_box,
                 target_box=target_box, mirrored=mirrored)


PHOTO = ImageInfo(1, 1000, 800, 88)
SMALL = ImageInfo(2, 500, 400, 85)


def test_a_query_inside_a_plain_photo_is_its_crop():
    e = classify(SMALL, match("crop", (0, 0, 1, 1), (0.2, 0.25, 0.7, 0.75)), PHOTO)
    assert (e.source_id, e.derived_id, e.relation) == (1, 2, "crop")
    assert e.source_box == (0.2, 0.25, 0.7, 0.75) and e.derived_box == (0, 0, 1, 1)
    assert e.scale == pytest.approx(1.0) and (e.tx, e.ty) == (-200.0, -200.0)


def test_a_stored_crop_found_inside_a_later_photo_is_still_the_crop():
    e = classify(PHOTO, match("contains", (0.2, 0.25, 0.7, 0.75), (0, 0, 1, 1)), SMALL)
    assert (e.source_id, e.derived_id, e.relation) == (1, 2, "crop")


def test_a_photo_in_a_picture_of_a_collage_is_its_source():
    collage = ImageInfo(1, 1200, 600, 85, pictures=((0.02, 0.05, 0.48, 0.95), (0.52, 0.05, 0.98, 0.95)))
    e = classify(SMALL, match("crop", (0, 0, 1, 1), (0.52, 0.06, 0.98, 0.94)), collage)
    assert (e.source_id, e.derived_id, e.relation) == (2, 1, "composite")
    e = classify(collage, match("composite", (0.02, 0.05, 0.48, 0.95), (0, 0, 1, 1)), SMALL)
    assert (e.source_id, e.derived_id, e.relation) == (2, 1, "composite")


def test_a_crop_with_more_pixels_than_its_would_be_source_is_not_from_it():
    tiny = ImageInfo(1, 200, 160, 85)
    assert classify(SMALL, match("crop", (0, 0, 1, 1), (0.2, 0.2, 0.7, 0.7)), tiny) is None


def test_partial_overlaps_are_siblings_unless_one_is_a_collage():
    assert classify(SMALL, match("composite", (0.5, 0, 1, 1), (0, 0, 0.4, 1)), PHOTO) is None
    paste = ImageInfo(2, 500, 400, 85, pictures=((0.5, 0.0, 1.0, 1.0),))
    e = classify(paste, match("composite", (0.5, 0, 1, 1), (0, 0, 0.4, 1)), PHOTO)
    assert (e.source_id, e.derived_id, e.relation) == (1, 2, "composite")


def test_near_duplicates_by_pixels_then_quality_then_ingest_order():
    assert lesser_copy(SMALL, PHOTO) and not lesser_copy(PHOTO, SMALL)
    worse = ImageInfo(5, 1000, 800, 30)
    assert lesser_copy(worse, PHOTO) and not lesser_copy(PHOTO, worse)
    same_later = ImageInfo(5, 1000, 800, 88)
    assert lesser_copy(same_later, PHOTO) and not lesser_copy(PHOTO, same_later)
    unknown_earlier = ImageInfo(0, 1000, 800, None)
    assert lesser_copy(PHOTO, unknown_earlier)
    bigger_file, smaller_file = ImageInfo(9, 1000, 800, None, (), 300_000), ImageInfo(1, 1000, 800, None, (), 200_000)
    assert lesser_copy(smaller_file, bigger_file) and not lesser_copy(bigger_file, smaller_file)
    query = ImageInfo(None, 1000, 800, None)  # not stored: the newest
    assert lesser_copy(query, PHOTO)
    e = classify(PHOTO, match("near_duplicate", (0, 0, 1, 1), (0, 0, 1, 1), mirrored=True), ImageInfo(2, 1000, 800, 30))
    assert (e.source_id, e.derived_id, e.relation, e.mirrored) == (1, 2, "near_duplicate", True)
    assert e.tx == pytest.approx(1000.0)  # x' = -x + 1000


def test_two_collages_sharing_a_photo_are_siblings():
    layout = ((0.02, 0.05, 0.48, 0.95), (0.52, 0.05, 0.98, 0.95))
    a, b = ImageInfo(1, 1200, 600, 85, layout), ImageInfo(2, 1200, 600, 85, layout)
    m = match("near_duplicate", (0, 0, 1, 1), (0, 0, 1, 1))  # the frames align
    rng = np.random.default_rng(0)
    in_right_cell = np.column_stack([rng.uniform(0.55, 0.95, 60), rng.uniform(0.1, 0.9, 60)])
    assert siblings(a, m, b, (in_right_cell, in_right_cell))
    assert classify(a, m, b, (in_right_cell, in_right_cell)) is None
    everywhere = np.column_stack([rng.uniform(0.05, 0.95, 60), rng.uniform(0.1, 0.9, 60)])
    assert not siblings(a, m, b, (everywhere, everywhere))  # a copy of the whole collage
    assert classify(a, m, b, (everywhere, everywhere)).relation == "near_duplicate"


def test_keeps_long_is_the_sql_function(conn):
    for xz, zy, xy in itertools.product(RELATIONS, repeat=3):
        sql = conn.execute("select lineage_keeps_long(%s, %s, %s) as k", (xz, zy, xy)).fetchone()["k"]
        assert sql == keeps_long(xz, zy, xy), (xz, zy, xy)
