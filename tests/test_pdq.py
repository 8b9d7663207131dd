"""engine.pdq against the reference pdqhash package, real rotations/mirrors, and pinned values.

The photos in tests/data/pdq are real photos from the evaluation pool (their original
SOURCES.csv lines are in tests/data/pdq/SOURCES.csv), downscaled to at most 512 px a side
(LANCZOS) and re-saved as JPEG q85.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.model import Hash
from engine.pdq import (
    BITS,
    DIHEDRAL_NAMES,
    REFERENCE_DIHEDRAL_ORDER,
    bits_to_hash,
    downsample_64,
    pdq_dihedral,
    pdq_hash,
)

DATA = Path(__file__).parent / "data" / "pdq"
PHOTOS = sorted(DATA.glob("*.jpg"))

TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "identity": lambda im: im,
    "rot90": lambda im: im.rotate(90, expand=True),
    "rot180": lambda im: im.rotate(180, expand=True),
    "rot270": lambda im: im.rotate(270, expand=True),
    "mirror": ImageOps.mirror,
    "mirror_rot90": lambda im: ImageOps.mirror(im).rotate(90, expand=True),
    "mirror_rot180": lambda im: ImageOps.mirror(im).rotate(180, expand=True),
    "mirror_rot270": lambda im: ImageOps.mirror(im).rotate(270, expand=True),
}

# Computed with engine.pdq and identical to pdqhash's (and so to pdq-photo-hasher's hex convention).
PINNED = {
    "skimage__chelsea.jpg": ("5feb5b21f01da156898e2b7629a5d3438412cdbd23f48942464526315db33ffd", 100),
    "imgaug__quokka.jpg": ("19e11ea5c4c6388e8b1d21fe9e9ef38a3a3d387e2cee13188fc1c8cec66641f1", 100),
}


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def pdqhash_reference():
    try:
        import pdqhash
    except ImportError:
        pytest.skip("pdqhash (the C++ reference, a test-only sdist needing a compiler) is not importable")
    return pdqhash


def test_the_data_is_there():
    assert len(PHOTOS) == 6
    listed = (DATA / "SOURCES.csv").read_text()
    for photo in PHOTOS:
        assert f"/{photo.name}," in listed


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_agrees_with_pdqhash(path):
    pdqhash = pdqhash_reference()
    image = load(path)
    ours, quality = pdq_hash(image)
    vector, reference_quality = pdqhash.compute(np.asarray(image))
    assert reference_quality >= 80
    assert ours - Hash.from_bools(vector) <= 10
    assert abs(quality - reference_quality) <= 1

    variants, _ = pdq_dihedral(image)
    reference_variants, _ = pdqhash.compute_dihedral(np.asarray(image))
    for name, reference_vector in zip(REFERENCE_DIHEDRAL_ORDER, reference_variants, strict=True):
        assert variants[name] - Hash.from_bools(reference_vector) <= 10, name


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_dihedral_variants_are_the_hashes_of_the_transformed_image(path):
    # 576 x 320: sizes 128*m + 64 (m even) make the reference's sampling grid and box windows
    # mirror-symmetric, so the variants derived from the DCT are the transformed images' hashes.
    image = load(path).resize((576, 320), Image.LANCZOS)
    variants, quality = pdq_dihedral(image)
    assert set(variants) == set(DIHEDRAL_NAMES)
    assert variants["identity"] == pdq_hash(image)[0]
    for name, transform in TRANSFORMS.items():
        assert variants[name] - pdq_hash(transform(image))[0] <= 3, name


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.stem)
def test_dihedral_variants_at_natural_size(path):
    # Elsewhere the grid is off by a pixel when mirrored, as in the reference: a few to ~20 bits.
    image = load(path)
    variants, _ = pdq_dihedral(image)
    actual = {name: pdq_hash(transform(image))[0] for name, transform in TRANSFORMS.items()}
    for name in DIHEDRAL_NAMES:
        assert variants[name] - actual[name] <= 32, name
        assert min(DIHEDRAL_NAMES, key=lambda other, name=name: variants[name] - actual[other]) == name


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_values(name):
    expected_hex, expected_quality = PINNED[name]
    digest, quality = pdq_hash(load(DATA / name))
    assert digest.bits == BITS
    assert digest.hex() == expected_hex
    assert quality == expected_quality


def test_bit_order():
    # Bit i*16 + j of the number is coefficient [i][j]: the larger half here are [8..15][*],
    # bits 128..255, the first 32 hex digits.
    digest = bits_to_hash(np.arange(256, dtype=np.float64).reshape(16, 16))
    assert digest.hex() == "f" * 32 + "0" * 32


def test_flat_image_has_low_quality():
    flat = Image.new("RGB", (400, 300), (120, 130, 140))
    assert pdq_hash(flat)[1] == 0
    gentle = Image.fromarray(np.tile(np.linspace(100, 110, 400, dtype=np.uint8), (300, 1))).convert("RGB")
    assert pdq_hash(gentle)[1] < 10
    assert pdq_hash(load(PHOTOS[0]))[1] >= 80


def test_tiny_image_hashes_to_zero():
    digest, quality = pdq_hash(Image.new("RGB", (4, 100), (200, 10, 10)))
    assert (digest, quality) == (Hash(0, BITS), 0)
    variants, quality = pdq_dihedral(Image.new("RGB", (4, 4)))
    assert quality == 0 and set(variants.values()) == {Hash(0, BITS)}


def test_other_modes_are_hashed_as_rgb():
    image = load(PHOTOS[1])
    assert pdq_hash(image.convert("L")) == pdq_hash(image.convert("L").convert("RGB"))
    assert pdq_hash(image.convert("L"))[0] - pdq_hash(image)[0] <= 16


def test_strips_of_a_pil_image_equal_the_whole_array():
    image = load(PHOTOS[2])
    whole = downsample_64(np.asarray(image))
    assert whole.shape == (64, 64)
    assert np.array_equal(downsample_64(image), whole)
    assert np.array_equal(downsample_64(image, strip_bytes=1), whole)  # one sample row per strip
