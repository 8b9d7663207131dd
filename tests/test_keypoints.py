"""Local features on real photos (tests/data/kp, see SOURCES.csv there): extraction, packing, words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import keypoints as K

DATA = Path(__file__).parent / "data" / "kp"


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.open(DATA / "skimage__coffee.jpg").convert("RGB")


def test_extract_is_deterministic_and_bounded(coffee):
    a = K.extract(coffee)
    b = K.extract(coffee)
    assert len(a) == K.MAX_FEATURES
    assert a.size == coffee.size  # 600 x 400 is below the working side: never upscaled
    assert np.array_equal(a.descriptors, b.descriptors) and np.array_equal(a.xy, b.xy)
    assert a.descriptors.shape == (len(a), 32) and a.descriptors.dtype == np.uint8
    assert len(K.extract(coffee, max_features=50)) == 50


def test_large_images_are_shrunk_to_the_working_side(coffee):
    big = coffee.resize((1800, 1200))
    kp = K.extract(big)
    assert kp.size == (K.WORKING_SIDE, K.WORKING_SIDE * 2 // 3)
    assert (kp.xy >= 0).all() and (kp.xy[:, 0] <= kp.size[0]).all() and (kp.xy[:, 1] <= kp.size[1]).all()


def test_keypoints_cover_every_part_of_the_image(coffee):
    kp = K.extract(coffee)
    cells = np.floor(kp.xy / np.array(kp.size) * 4).clip(0, 3).astype(int)
    per_cell = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    # textured cells all keep some (this photo has one plain corner), so a 15% crop anywhere has features
    assert (per_cell >= 5).sum() >= 14
    assert per_cell.max() <= len(kp) // 4


def test_bytes_round_trip(coffee):
    kp = K.extract(coffee)
    data = K.to_bytes(kp)
    assert len(data) == 9 + 39 * len(kp)
    back = K.from_bytes(data)
    assert back.size == kp.size
    assert np.array_equal(back.descriptors, kp.descriptors)
    assert np.abs(back.xy - kp.xy).max() <= 1 / 32
    assert np.allclose(back.scale, kp.scale, rtol=1e-3)
    assert (np.abs((back.angle - kp.angle + 180) % 360 - 180) <= 0.71).all()
    assert K.from_bytes(K.to_bytes(K.empty((10, 20)))).size == (10, 20)
    with pytest.raises(ValueError):
        K.from_bytes(b"XYZ" + data[3:])


def test_mirror_reports_positions_in_the_original_frame(coffee):
    plain = K.extract(coffee)
    flipped = K.extract(coffee.transpose(Image.FLIP_LEFT_RIGHT), mirror=True)
    # describing the mirror of the mirror gives back the plain descriptors, at mirrored positions
    assert len(flipped) == len(plain)
    same = np.sort(flipped.descriptors.view("V32").ravel()) == np.sort(plain.descriptors.view("V32").ravel())
    assert same.all()
    assert np.allclose(np.sort(flipped.xy[:, 1]), np.sort(plain.xy[:, 1]), atol=0.01)


def test_words_are_stable(coffee):
    chelsea = Image.open(DATA / "skimage__chelsea.jpg").convert("RGB")
    found = K.words(K.extract(chelsea))
    assert found.dtype == np.int32 and len(found) == len(K.extract(chelsea))
    assert (found >= 0).all() and (found < K.vocabulary().size).all()
    assert found[:12].tolist() == PINNED_CHELSEA_WORDS


def test_multi_assignment_starts_with_the_stored_word(coffee):
    kp = K.extract(coffee)
    one = K.words(kp)
    three = K.words(kp, assign=3).reshape(-1, 3)
    assert np.array_equal(three[:, 0], one)
    assert all(len(set(row)) == 3 for row in three.tolist())
    assert K.word_counts(kp) == dict(zip(*map(np.ndarray.tolist, np.unique(one, return_counts=True)), strict=True))


# regenerate only with a new engine/data/orb_vocab.npz (bench/train_vocab.py): stored words would change too
PINNED_CHELSEA_WORDS = [423976, 5193444, 341194, 4806251, 4645239, 1821491, 5003609, 3580093, 4157487, 4329615,
                        1891056, 4388621]


def test_postings_carry_angle_and_level(coffee):
    kp = K.extract(coffee)
    rows = K.postings(kp)
    assert np.array_equal(rows.word, K.words(kp))
    assert rows.angle.dtype == np.int16 and ((rows.angle >= 0) & (rows.angle < 256)).all()
    assert rows.level.min() >= 0 and rows.level.max() <= 2 * (K.N_LEVELS - 1)
    flipped = K.postings(kp, mirror=True)
    assert np.array_equal((rows.angle + flipped.angle) % 256, np.zeros(len(kp)))
    assert len(K.postings(kp, assign=2).word) == 2 * len(kp)


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (10_000, 1), (1, 10_000), (10_000, 2), (30, 800), (2, 30)])
def test_tiny_and_thin_images_have_no_keypoints_and_no_opencv_error(size):
    # regression (tests/test_bad_images.py): ORB's pyramid resized such images to 0 pixels and
    # OpenCV raised cv2.error from resize, a 500 on the HTTP API
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    assert len(K.extract(image)) == 0
    direct, mirrored = K.extract_with_mirror(image)
    assert len(direct) == len(mirrored) == 0


def test_the_cut_off_loses_no_keypoint():
    # ORB itself finds nothing in images thinner than MIN_SIDE (where it does not fail outright)
    rng = np.random.default_rng(1)
    for side in range(4, K.MIN_SIDE):
        grey = rng.integers(0, 256, (side, 1000), dtype=np.uint8)
        assert len(K._orb(2000).detect(grey, None)) == 0, side
    assert len(K._orb(2000).detect(rng.integers(0, 256, (K.MIN_SIDE, 1000), dtype=np.uint8), None)) > 0
