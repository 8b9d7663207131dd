"""engine.hashes against ImageHash 4.3.2 (the reference, imported here only) on real images."""

from __future__ import annotations

import io
import random
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from engine import hashes
from engine.hashes import DIHEDRAL_INVERSE, DIHEDRAL_NAMES, DIHEDRAL_OPS
from engine.loading import load_image
from engine.model import Hash

POOL = Path(__file__).parent / "data" / "pool"
FILES = sorted(p for p in POOL.rglob("*") if p.suffix in (".jpg", ".png"))
IDS = [p.name for p in FILES]
T = Image.Transpose


def ref(h: imagehash.ImageHash) -> Hash:
    return Hash.from_bools(h.hash.flatten())


def opened(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


@pytest.fixture(scope="module", params=FILES, ids=IDS)
def image(request) -> Image.Image:
    return opened(request.param)


def test_the_pool_is_a_real_mix():
    kinds = {p.parent.name for p in FILES}
    assert kinds == {"photos", "faces", "icons", "distractors"} and len(FILES) >= 30


def test_global_hashes_equal_imagehash(image):
    ours = hashes.global_hashes(image)
    assert ours.ahash == hashes.ahash(image) == ref(imagehash.average_hash(image))
    assert ours.dhash == hashes.dhash(image) == ref(imagehash.dhash(image))
    assert ours.phash == hashes.phash(image) == ref(imagehash.phash(image))
    assert ours.phash.bits == 64 and ours.dihedral[0] == ours.phash


def test_hashes_of_loaded_images_equal_imagehash(image):
    # what the engine actually hashes: RGB, alpha composited onto white
    buf = io.BytesIO()
    image.save(buf, "PNG")
    loaded = load_image(buf.getvalue(), name="pool image").image
    assert hashes.phash(loaded) == ref(imagehash.phash(loaded))
    assert hashes.dhash(loaded) == ref(imagehash.dhash(loaded))
    assert hashes.ahash(loaded) == ref(imagehash.average_hash(loaded))


@pytest.mark.parametrize(
    "name, expected",
    [
        # JPEG values depend on the JPEG decoder bundled with Pillow; the PNG one does not
        ("photos/skimage__chelsea.jpg", ("82808e4b09a373e7", "5414589aab6fa785", "b15fe6465121175e")),
        ("faces/matplotlib__grace_hopper.jpg", ("1f0b1f3f3f180000", "71327254f3335454", "9d8a745883d71ea5")),
        ("icons/openclipart__globe_01.png", ("0018383800000000", "0030626000600000", "cccc303131cfcfcc")),
    ],
)
def test_pinned_values(name, expected):
    """Catches a change that would move both our hashes and imagehash's (e.g. a new resize filter)."""
    im = opened(POOL / name)
    assert (hashes.ahash(im).hex(), hashes.dhash(im).hex(), hashes.phash(im).hex()) == expected


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "CMYK", "LA"])
@pytest.mark.parametrize("size", [(640, 427), (5, 3), (1, 1), (33, 900)])
def test_modes_and_odd_sizes_equal_imagehash(mode, size):
    im = opened(POOL / "photos" / "skimage__coffee.jpg").resize(size, Image.Resampling.BILINEAR).convert(mode)
    assert hashes.ahash(im) == ref(imagehash.average_hash(im))
    assert hashes.dhash(im) == ref(imagehash.dhash(im))
    assert hashes.phash(im) == ref(imagehash.phash(im))
    assert hashes.phash_dihedral(im) == {n: ref(imagehash.phash(t)) for n, t in hashes.dihedral(im)}


def test_dihedral_hashes_equal_phash_of_the_transformed_images(image):
    ours = hashes.phash_dihedral(image)
    assert list(ours) == list(DIHEDRAL_NAMES)
    for name, transformed in hashes.dihedral(image):
        assert ours[name] == ref(imagehash.phash(transformed)), name
    assert hashes.global_hashes(image).dihedral_by_name() == ours


def test_dihedral_names_mean_what_they_say():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)  # 3 rows, 4 columns
    im = Image.fromarray(a)
    got = {name: np.asarray(t) for name, t in hashes.dihedral(im)}
    assert got["identity"] is not None and np.array_equal(got["identity"], a)
    assert np.array_equal(got["rot90"], np.rot90(a, 1))  # counter-clockwise
    assert np.array_equal(got["rot180"], np.rot90(a, 2))
    assert np.array_equal(got["rot270"], np.rot90(a, 3))
    assert np.array_equal(got["mirror"], a[:, ::-1])
    for k in (1, 2, 3):  # mirror first, then turn
        assert np.array_equal(got[f"mirror_rot{90 * k}"], np.rot90(a[:, ::-1], k))
    for name, t in hashes.dihedral(im):
        undo = DIHEDRAL_OPS[DIHEDRAL_INVERSE[name]]
        assert np.array_equal(np.asarray(t if undo is None else t.transpose(undo)), a), name


def test_a_mirrored_query_finds_its_original_by_dihedral_hash():
    original = opened(POOL / "faces" / "face_recognition__obama.jpg")
    query = original.transpose(T.FLIP_LEFT_RIGHT)
    by_name = hashes.phash_dihedral(original)
    assert hashes.phash(query) == by_name["mirror"]
    assert hashes.phash(query) - by_name["identity"] > 10


def random_boxes(rng: random.Random, n: int) -> list[tuple[float, float, float, float]]:
    boxes = [(0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0), (0.999, 0.0, 1.0, 0.001)]
    while len(boxes) < n:
        w, h = rng.uniform(0.02, 1.0), rng.uniform(0.02, 1.0)
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


def test_phash_boxes_equal_imagehash_of_the_crops(image):
    rng = random.Random(image.size[0] * 7919 + image.size[1])
    boxes = random_boxes(rng, 12)
    ours = hashes.phash_boxes(image.convert("L"), boxes)
    assert ours == hashes.phash_boxes(image, boxes)  # colour input is converted once
    for box, h in zip(boxes, ours, strict=True):
        crop = image.crop(hashes.box_pixels(box, image.size))
        assert h == ref(imagehash.phash(crop)), box
    assert hashes.phash_boxes(image, []) == []


def test_box_pixels_rounds_and_checks():
    assert hashes.box_pixels((0.0, 0.0, 1.0, 1.0), (640, 480)) == (0, 0, 640, 480)
    assert hashes.box_pixels((0.25, 0.5, 0.75, 1.0), (10, 10)) == (3, 5, 8, 10)  # halves round up
    assert hashes.box_pixels((0.5, 0.5, 0.5001, 0.5001), (10, 10)) == (5, 5, 6, 6)  # at least one pixel
    assert hashes.box_pixels((1.0 - 1e-12, 0, 1.0, 1.0), (10, 10)) == (9, 0, 10, 10)
    for bad in [(0.5, 0, 0.4, 1), (0, 0, 1.2, 1), (-0.1, 0, 1, 1), (0, 0.3, 1, 0.3)]:
        with pytest.raises(ValueError):
            hashes.box_pixels(bad, (10, 10))


def test_hash_bit_order_is_imagehash_order():
    bits = np.zeros((8, 8), dtype=bool)
    bits[0, 0] = True  # first element -> most significant bit
    bits[7, 7] = True
    im = Image.fromarray(np.where(bits, 255, 0).astype(np.uint8))
    h = hashes.ahash(im)
    assert h == ref(imagehash.average_hash(im)) and h.hex() == "8000000000000001"
