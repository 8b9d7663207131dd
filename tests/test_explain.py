"""Geometry of explanations: boxes and relations from a query->stored similarity."""

from __future__ import annotations

import numpy as np
import pytest

from engine.explain import Explanation, Similarity, explain, from_boxes, mark_composites, score


def test_identity_is_a_near_duplicate_and_duplicate_when_identical():
    e = explain((400, 300), (800, 600), Similarity(2.0))
    assert e.relation == "near_duplicate" and e.query_box == (0, 0, 1, 1) and e.target_box == (0, 0, 1, 1)
    assert explain((400, 300), (400, 300), Similarity(1.0), identical=True).relation == "duplicate"


def test_crop_lies_where_it_was_cut():
    # a 200x150 crop taken at (100, 50) from an 800x600 image, stored at full size
    e = explain((200, 150), (800, 600), Similarity(1.0, tx=100, ty=50))
    assert e.relation == "crop"
    assert e.query_box == (0, 0, 1, 1)
    assert e.target_box == pytest.approx((0.125, 50 / 600, 0.375, 200 / 600), abs=1e-3)


def test_contains_when_the_stored_image_sits_inside_the_query():
    # the stored 300x300 image appears at half size at (500, 100) in a 1200x600 query
    sim = from_boxes((500, 100, 650, 250), (0, 0, 300, 300))
    e = explain((1200, 600), (300, 300), sim)
    assert e.relation == "contains"
    assert e.target_box == (0, 0, 1, 1)
    assert e.query_box == pytest.approx((500 / 1200, 100 / 600, 650 / 1200, 250 / 600), abs=1e-3)


def test_mirror_and_rotation_flags_and_inverse():
    sim = Similarity(1.5, rotation=90.0, mirrored=True, tx=10, ty=20)
    pts = np.array([[0, 0], [30, 40], [100, 5]], dtype=float)
    back = sim.inverse().apply(sim.apply(pts))
    assert np.allclose(back, pts)
    assert sim.inverse().mirrored and sim.quarter_turns == 1 and not sim.tilted
    assert Similarity(1.0, rotation=5.0).tilted


def test_mirrored_boxes_map_edges_across():
    sim = from_boxes((0, 0, 100, 100), (0, 0, 100, 100), mirrored=True)
    assert np.allclose(sim.apply([[0, 0], [100, 0]]), [[100, 0], [0, 0]])
    e = explain((100, 100), (100, 100), sim)
    assert e.relation == "near_duplicate" and e.mirrored


def test_partial_overlap_is_a_composite_and_parts_of_one_query_are_marked():
    e = explain((400, 400), (400, 400), Similarity(1.0, tx=200, ty=0))
    assert e.relation == "composite"
    left = Explanation("contains", (0, 0, 0.5, 1), (0, 0, 1, 1), 0.5, 1.0, False, False)
    right = Explanation("contains", (0.5, 0, 1, 1), (0, 0, 1, 1), 0.5, 1.0, False, False)
    lone = mark_composites([left])
    assert lone[0].relation == "contains"
    assert [x.relation for x in mark_composites([left, right])] == ["composite", "composite"]


def test_scores_are_bounded_and_ordered():
    assert score(exact=True) == 100
    assert score(distance_bits=0) > score(distance_bits=8) > score(distance_bits=20) >= 0
    assert 50 < score(inliers=15) < score(inliers=150) <= 99
