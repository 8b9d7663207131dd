"""Geometric verification on real photos (tests/data/kp): crops, pastes, mirrors, turns, unrelated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import keypoints as K
from engine.verify import (
    MIN_INLIERS,
    SCREEN_MIN_KEYPOINTS,
    Transform,
    _on_one_curve,
    screened,
    screening_sample,
    shared_boxes,
    verify,
)

DATA = Path(__file__).parent / "data" / "kp"


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.open(DATA / "skimage__coffee.jpg").convert("RGB")


@pytest.fixture(scope="module")
def stored(coffee) -> K.Keypoints:
    return K.extract(coffee)


def close(found, expected, tolerance=0.03) -> bool:
    return bool(np.abs(np.array(found) - np.array(expected)).max() <= tolerance)


@pytest.mark.parametrize("box", [(0.1, 0.2, 0.6, 0.8), (0.55, 0.5, 0.95, 0.9)])
def test_crop_verifies_with_its_box_and_scale(coffee, stored, box):
    w, h = coffee.size
    crop = coffee.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    crop = crop.resize((crop.width * 3 // 2, crop.height * 3 // 2), Image.BICUBIC)  # and enlarged 1.5x
    v = verify(K.extract(crop), stored)
    assert v is not None and v.accepted and v.distinct >= MIN_INLIERS
    assert close(v.stored_box, box)
    assert close(v.query_box, (0, 0, 1, 1))
    assert abs(v.transform.scale - 1 / 1.5) < 0.03
    assert abs(v.transform.rotation) < 1.5 and not v.transform.mirrored
    assert 0.5 < v.confidence <= 1


def test_stored_image_pasted_into_the_query(coffee, stored):
    canvas = Image.open(DATA / "skimage__camera.jpg").convert("RGB").resize((900, 700))
    small = coffee.resize((450, 300))
    canvas.paste(small, (300, 250))
    v = verify(K.extract(canvas), stored)
    assert v is not None and v.accepted
    assert close(v.stored_box, (0, 0, 1, 1))
    assert close(v.query_box, (300 / 900, 250 / 700, 750 / 900, 550 / 700))


def test_mirrored_copy_verifies_as_mirrored(coffee, stored):
    flipped = coffee.transpose(Image.FLIP_LEFT_RIGHT)
    plain = verify(K.extract(flipped), stored)
    assert plain is None or plain.distinct < MIN_INLIERS  # ORB is not mirror-invariant ...
    v = verify(K.extract(flipped, mirror=True), stored)  # ... so the query side also describes the mirror
    assert v is not None and v.accepted and v.transform.mirrored
    assert abs(v.transform.scale - 1) < 0.02 and abs(v.transform.rotation) < 1
    assert close(v.stored_box, (0, 0, 1, 1)) and close(v.query_box, (0, 0, 1, 1))
    # the transform maps the query's left edge onto the stored right edge
    assert np.allclose(v.transform.apply(np.array([[0.0, 200.0]])), [[600.0, 200.0]], atol=6)


@pytest.mark.parametrize("angle", [90, 270, 5])
def test_turned_copy_verifies_with_its_rotation(coffee, stored, angle):
    turned = coffee.rotate(angle, resample=Image.BICUBIC, expand=True)
    v = verify(K.extract(turned), stored)
    assert v is not None and v.accepted
    # PIL turns counter-clockwise on screen; mapping the query back turns by +angle in y-down coordinates
    assert abs((v.transform.rotation - angle + 180) % 360 - 180) < 1.5
    if angle % 90 == 0:
        assert close(v.stored_box, (0, 0, 1, 1)) and close(v.query_box, (0, 0, 1, 1))


def test_unrelated_photos_do_not_verify(stored):
    for name in ("skimage__camera.jpg", "skimage__chelsea.jpg"):
        other = Image.open(DATA / name).convert("RGB")
        for mirror in (False, True):
            assert verify(K.extract(other, mirror=mirror), stored) is None


def test_verification_is_deterministic(coffee, stored):
    """The same pair gives the same fit every time (its speed is measured in bench/keypoints.py:
    speed is a benchmark's business, not a unit test's)."""
    query = K.extract(coffee.crop((100, 50, 500, 350)))
    first, again = verify(query, stored), verify(query, stored)
    assert first is not None and again is not None
    assert (first.inliers, first.distinct, first.transform) == (again.inliers, again.distinct, again.transform)


def test_shared_boxes_of_a_half_overlap():
    # query 100x100 whose left half is the right half of a stored 100x100 image
    t = Transform(scale=1.0, rotation=0.0, mirrored=False, tx=50.0, ty=0.0)
    query_box, stored_box = shared_boxes(t, (100, 100), (100, 100))
    assert query_box == (0.0, 0.0, 0.5, 1.0) and stored_box == (0.5, 0.0, 1.0, 1.0)


def test_inliers_on_one_line_or_circle_are_degenerate():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 2 * np.pi, 40)
    circle = np.column_stack([300 + 120 * np.cos(t), 250 + 120 * np.sin(t)])
    line = np.column_stack([np.linspace(10, 500, 40), np.linspace(40, 300, 40)])
    spread = rng.uniform(0, 600, (40, 2))
    assert _on_one_curve(circle, (640, 480)) == 1.0
    assert _on_one_curve(line, (640, 480)) == 1.0
    assert _on_one_curve(spread, (640, 480)) < 0.3


def query_keypoints(image: Image.Image) -> K.Keypoints:
    """Described as a query is (more keypoints than a stored image: the case screening is for)."""
    return K.extract(image, K.QUERY_FEATURES, K.QUERY_WORKING_SIDE, grid=K.QUERY_GRID)


@pytest.mark.parametrize("box", [(0.1, 0.2, 0.6, 0.8), (0.3, 0.3, 0.7, 0.7)])
def test_screened_verification_gives_the_full_result_when_the_sample_fits(coffee, stored, box):
    w, h = coffee.size
    crop = coffee.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    query = query_keypoints(crop.resize((crop.width * 2, crop.height * 2), Image.BICUBIC))
    assert len(query) >= SCREEN_MIN_KEYPOINTS
    full, screened_ = verify(query, stored), screened(query, stored)
    assert full is not None and full.accepted
    assert screened_ == full  # the same fit: screening only decides whether to run it


def test_screening_rejects_unrelated_photos_on_the_sample(stored):
    for name in ("skimage__camera.jpg", "skimage__chelsea.jpg"):
        query = query_keypoints(Image.open(DATA / name).convert("RGB"))
        sample = screening_sample(query)
        assert len(sample) < len(query)
        assert verify(sample, stored, min_inliers=1) is None  # what screened() rejects on
        assert screened(query, stored) is None


def test_keypoints_take_keeps_each_keypoint_whole():
    kp = K.extract(Image.open(DATA / "skimage__chelsea.jpg").convert("RGB"))
    part = kp.take(np.array([3, 0, 7]))
    assert part.size == kp.size and len(part) == 3
    for i, j in enumerate((3, 0, 7)):
        assert (part.xy[i] == kp.xy[j]).all() and part.scale[i] == kp.scale[j] and part.angle[i] == kp.angle[j]
        assert (part.descriptors[i] == kp.descriptors[j]).all()
