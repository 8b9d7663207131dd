"""engine.loading on real images: every format and pixel mode, orientation, alpha, limits, bad input.

Variants (other formats, modes, EXIF tags, broken files) are generated here from tests/data/pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import resource
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from engine.config import load_settings
from engine.errors import (
    EmptyInputError,
    ImageDecodeError,
    ImageTooLargeError,
    ImgsearchError,
    InputError,
    UnsupportedFormatError,
)
from engine.loading import LoadedImage, load_bytes, load_image, thumbnail_jpeg

POOL = Path(__file__).parent / "data" / "pool"
PHOTO = POOL / "photos" / "gcompris__kitten.jpg"  # 640x360
ICON = POOL / "icons" / "openclipart__bunny_01.png"  # RGBA with transparent background
T = Image.Transpose


def opened(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)


def on_white(rgba: Image.Image) -> np.ndarray:
    """Reference compositing, computed independently of Pillow's paste."""
    a = np.asarray(rgba, dtype=np.float64)
    alpha = a[..., 3:] / 255.0
    return a[..., :3] * alpha + 255.0 * (1.0 - alpha)


def settings(**changes):
    return dataclasses.replace(load_settings(), **changes)


# --- what a loaded image is ---------------------------------------------------------------------


def test_a_jpeg_from_a_path():
    loaded = load_image(PHOTO)
    raw = PHOTO.read_bytes()
    assert isinstance(loaded, LoadedImage)
    assert loaded.image.mode == "RGB" and loaded.image.size == (640, 360)
    assert (loaded.width, loaded.height, loaded.format) == (640, 360, "JPEG")
    assert loaded.sha256 == hashlib.sha256(raw).digest() and loaded.file_size == len(raw)
    assert loaded.name == str(PHOTO) and loaded.alpha_mask is None and loaded.scale == 1.0
    assert np.array_equal(pixels(loaded.image), pixels(opened(PHOTO)))
    assert load_bytes(PHOTO) == raw


def test_bytes_with_and_without_a_name():
    raw = PHOTO.read_bytes()
    assert load_image(raw, name="upload.jpg").name == "upload.jpg"
    assert load_image(bytearray(raw)).name == f"<{len(raw)} bytes>"


def test_every_pool_image_loads():
    for path in sorted(POOL.rglob("*.*")):
        loaded = load_image(path)
        assert loaded.image.mode == "RGB" and loaded.image.size == (loaded.width, loaded.height)
        assert (loaded.alpha_mask is not None) == (path.parent.name == "icons"), path


# --- formats and pixel modes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, params",
    [("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"})],
)
def test_lossless_formats_give_the_same_pixels(fmt, params):
    source = opened(PHOTO)
    loaded = load_image(encode(source, fmt, **params), name=f"kitten.{fmt.lower()}")
    assert loaded.format == fmt
    assert np.array_equal(pixels(loaded.image), pixels(source))


def test_lossy_webp():
    loaded = load_image(encode(opened(PHOTO), "WEBP", quality=80))
    assert loaded.format == "WEBP" and loaded.image.size == (640, 360)
    assert np.abs(pixels(loaded.image) - pixels(opened(PHOTO))).mean() < 4


def test_gif_gives_its_first_frame():
    first = opened(PHOTO)
    second = opened(POOL / "photos" / "gcompris__saturn.jpg").resize(first.size)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    loaded = load_image(data, name="anim.gif")
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 2
        expected = gif.convert("RGB")  # frame 0
    assert loaded.format == "GIF"
    assert np.array_equal(pixels(loaded.image), pixels(expected))
    assert np.abs(pixels(loaded.image) - pixels(first)).mean() < 12  # 256 colours, but the same picture


def test_cmyk_jpeg():
    source = opened(PHOTO)
    loaded = load_image(encode(source.convert("CMYK"), "JPEG", quality=95), name="cmyk.jpg")
    assert loaded.image.mode == "RGB"
    assert np.abs(pixels(loaded.image) - pixels(source)).mean() < 4


def test_greyscale_and_one_bit():
    grey = opened(PHOTO).convert("L")
    loaded = load_image(encode(grey, "JPEG", quality=95))
    assert loaded.image.mode == "RGB" and np.abs(pixels(loaded.image)[..., 0] - pixels(grey)).mean() < 3
    bilevel = grey.convert("1")
    loaded = load_image(encode(bilevel, "PNG"))
    assert set(np.unique(pixels(loaded.image))) <= {0, 255}
    assert np.array_equal(pixels(loaded.image), pixels(bilevel.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt):
    grey = np.asarray(opened(PHOTO).convert("L"))
    deep = Image.fromarray(grey.astype(np.uint16) * 257)  # the same picture on 0..65535
    assert deep.mode == "I;16"
    loaded = load_image(encode(deep, fmt), name=f"deep.{fmt.lower()}")
    assert np.array_equal(np.asarray(loaded.image)[..., 0], grey)


def test_float_greyscale():
    grey = np.asarray(opened(PHOTO).convert("L"))
    loaded = load_image(encode(Image.fromarray(grey.astype(np.float32) / 255.0), "TIFF"), name="float.tif")
    assert np.abs(pixels(loaded.image)[..., 0] - grey.astype(np.int16)).max() <= 1


def test_alpha_is_composited_onto_white_and_kept_as_mask():
    icon = opened(ICON)
    assert icon.mode == "RGBA"
    loaded = load_image(ICON)
    alpha = np.asarray(icon)[..., 3]
    assert loaded.alpha_mask is not None and loaded.alpha_mask.mode == "L"
    assert np.array_equal(np.asarray(loaded.alpha_mask), alpha)
    got = pixels(loaded.image)
    assert (got[alpha == 0] == 255).all()
    assert np.array_equal(got[alpha == 255], np.asarray(icon)[..., :3][alpha == 255])
    assert np.abs(got - on_white(icon)).max() <= 1


def test_an_opaque_alpha_channel_is_no_mask():
    loaded = load_image(encode(opened(PHOTO).convert("RGBA"), "PNG"))
    assert loaded.alpha_mask is None and np.array_equal(pixels(loaded.image), pixels(opened(PHOTO)))


def test_palette_with_transparency():
    icon = opened(ICON)
    palette = icon.quantize(colors=64)  # P with a transparent palette entry (tRNS)
    data = encode(palette, "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "P" and "transparency" in check.info
        reference = check.convert("RGBA")
    loaded = load_image(data, name="palette.png")
    assert np.array_equal(np.asarray(loaded.alpha_mask), np.asarray(reference)[..., 3])
    assert np.abs(pixels(loaded.image) - on_white(reference)).max() <= 1


def test_grey_with_alpha():
    grey = opened(PHOTO).convert("L")
    ramp = Image.linear_gradient("L").resize(grey.size)
    la = Image.merge("LA", (grey, ramp))
    loaded = load_image(encode(la, "PNG"), name="la.png")
    assert np.array_equal(np.asarray(loaded.alpha_mask), np.asarray(ramp))
    assert np.abs(pixels(loaded.image) - on_white(la.convert("RGBA"))).max() <= 1


def test_webp_with_alpha():
    icon = opened(ICON)
    loaded = load_image(encode(icon, "WEBP", lossless=True), name="icon.webp")
    assert np.array_equal(np.asarray(loaded.alpha_mask), np.asarray(icon)[..., 3])


def test_multi_picture_jpeg_is_reported_as_jpeg():
    photo = opened(PHOTO)
    data = encode(photo, "MPO", save_all=True, append_images=[photo.transpose(T.FLIP_LEFT_RIGHT)])
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO"
    assert load_image(data).format == "JPEG"


def test_the_content_decides_not_the_name(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(opened(PHOTO), "PNG"))
    assert load_image(path).format == "PNG"


# --- EXIF orientation ---------------------------------------------------------------------------

# how a camera stores the pixels of an upright picture for each EXIF orientation (EXIF 2.3, 4.6.4)
STORED_AS = {
    1: None,
    2: T.FLIP_LEFT_RIGHT,
    3: T.ROTATE_180,
    4: T.FLIP_TOP_BOTTOM,
    5: T.TRANSPOSE,
    6: T.ROTATE_90,  # row 0 = the right-hand side; shown turned 90 degrees clockwise
    7: T.TRANSVERSE,
    8: T.ROTATE_270,
}


def with_orientation(upright: Image.Image, orientation: int, fmt: str, **params) -> bytes:
    op = STORED_AS[orientation]
    stored = upright if op is None else upright.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif, **params)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_give_the_same_upright_pixels(orientation):
    upright = opened(PHOTO)
    data = with_orientation(upright, orientation, "PNG")
    loaded = load_image(data, name=f"orientation{orientation}.png")
    assert (loaded.width, loaded.height) == upright.size == loaded.image.size
    assert np.array_equal(pixels(loaded.image), pixels(upright))
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert np.array_equal(pixels(loaded.image), pixels(reference.convert("RGB")))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_of_a_jpeg(orientation):
    upright = opened(POOL / "faces" / "face_recognition__biden.jpg")  # portrait 282x640
    loaded = load_image(with_orientation(upright, orientation, "JPEG", quality=95))
    assert (loaded.width, loaded.height) == upright.size == loaded.image.size
    assert np.abs(pixels(loaded.image) - pixels(upright)).mean() < 3


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_is_ignored_not_fatal():
    photo = opened(PHOTO)
    data = encode(photo, "JPEG", quality=90, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    loaded = load_image(data, name="bad_exif.jpg")
    assert loaded.image.size == (640, 360)


# --- reduced JPEG decoding ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(opened(PHOTO).resize((2560, 1440), Image.Resampling.LANCZOS), "JPEG", quality=85)


@pytest.mark.parametrize(
    "target, decoded",
    [(None, (2560, 1440)), (4000, (2560, 1440)), (2000, (2560, 1440)), (1024, (1280, 720)), (640, (640, 360)),
     (300, (320, 180)), (100, (320, 180))],
)
def test_target_size_decodes_smaller_but_reports_the_original_size(big_jpeg, target, decoded):
    loaded = load_image(big_jpeg, name="big.jpg", target_size=target)
    assert loaded.image.size == decoded  # 1/1, 1/2, 1/4 or 1/8, never below the target
    assert (loaded.width, loaded.height) == (2560, 1440)
    assert loaded.scale == decoded[0] / 2560 and loaded.file_size == len(big_jpeg)


def test_target_size_with_exif_rotation():
    upright = opened(PHOTO).resize((1440, 2560))  # portrait
    loaded = load_image(with_orientation(upright, 6, "JPEG", quality=85), target_size=600)
    assert (loaded.width, loaded.height) == (1440, 2560)
    assert loaded.image.size == (360, 640)


def test_target_size_does_not_touch_other_formats():
    loaded = load_image(encode(opened(PHOTO).resize((2560, 1440)), "PNG"), target_size=640)
    assert loaded.image.size == (2560, 1440)


# --- limits and bad input -----------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A valid-looking 8-bit greyscale PNG declaring width x height, with only 4 rows of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def bad_inputs() -> dict[str, tuple[bytes, type[ImgsearchError]]]:
    jpeg, png = PHOTO.read_bytes(), encode(opened(PHOTO), "PNG")
    return {
        "empty.jpg": (b"", EmptyInputError),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], ImageDecodeError),
        "truncated_end.jpg": (jpeg[:-600], ImageDecodeError),
        "truncated.png": (png[: len(png) // 2], ImageDecodeError),
        "truncated_header.png": (png[:20], ImageDecodeError),
        "notes.jpg": (b"Shopping list:\n- eggs\n- milk\n" * 20, ImageDecodeError),
        "page.jpg": (b"<!DOCTYPE html>\n<html><body><img src='x.jpg'></body></html>", ImageDecodeError),
        "drawing.jpg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedFormatError),
        "icon.jpg": (encode(opened(ICON).resize((64, 64)), "ICO"), UnsupportedFormatError),
        "doc.jpg": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", UnsupportedFormatError),
        "random.jpg": (random.Random(1).randbytes(5000), ImageDecodeError),
        "bomb.png": (png_header_only(50_000, 50_000), ImageTooLargeError),
    }


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_input_raises_our_error_naming_the_file(tmp_path, name):
    data, error = bad_inputs()[name]
    path = tmp_path / name
    path.write_bytes(data)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for source in (path, data):
        with pytest.raises(error) as caught:
            load_image(source, name=None if source is path else name)
        assert name in caught.value.message
        assert type(caught.value) is error
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB


@pytest.mark.parametrize("warnings_are", ["ignore", "error"])
def test_an_image_over_the_pixel_limit_from_its_header(warnings_are):
    data = png_header_only(10_000, 10_000)  # between Pillow's warning and error thresholds
    with warnings.catch_warnings():
        warnings.simplefilter(warnings_are)
        with pytest.raises(ImageTooLargeError, match="huge.png"):
            load_image(data, name="huge.png")


def test_our_own_pixel_limit():
    with pytest.raises(ImageTooLargeError, match=r"kitten\.jpg: 640x360 = 230,400 pixels .* 100,000"):
        load_image(PHOTO.read_bytes(), name="kitten.jpg", settings=settings(max_pixels=100_000))
    assert load_image(PHOTO, settings=settings(max_pixels=230_400)).width == 640


def test_byte_limit(tmp_path):
    small = settings(max_bytes=10_000)
    with pytest.raises(ImageTooLargeError, match="gcompris__kitten.jpg: 45,365 bytes .* 10,000"):
        load_image(PHOTO, settings=small)
    with pytest.raises(ImageTooLargeError, match="upload"):
        load_image(PHOTO.read_bytes(), name="upload", settings=small)
    with pytest.raises(ImageTooLargeError):
        load_bytes(PHOTO, small)


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(InputError, match="nothing.jpg: no such file") as caught:
        load_image(tmp_path / "nothing.jpg")
    assert not isinstance(caught.value, ImageDecodeError)
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupted_files_never_raise_anything_but_our_errors():
    rng = random.Random(7)
    originals = [PHOTO.read_bytes(), encode(opened(ICON), "PNG"), encode(opened(PHOTO), "WEBP"),
                 encode(opened(PHOTO), "GIF"), encode(opened(PHOTO), "TIFF"), encode(opened(PHOTO), "BMP")]
    outcomes = {"loaded": 0, "refused": 0}
    for original in originals:
        for _ in range(25):
            data = bytearray(original)
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(min(len(data), 2000))] = rng.randrange(256)  # mostly headers
            data = bytes(data[: rng.randint(8, len(data))]) if rng.random() < 0.5 else bytes(data)
            try:
                load_image(data, name="fuzzed")
                outcomes["loaded"] += 1
            except ImgsearchError as e:
                assert "fuzzed" in e.message
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0


# --- thumbnails ---------------------------------------------------------------------------------


def test_thumbnail_jpeg():
    data = thumbnail_jpeg(load_image(PHOTO).image)
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (256, 144)
    assert len(data) < 20_000
    with Image.open(io.BytesIO(thumbnail_jpeg(opened(ICON), max_side=64))) as thumb:
        assert max(thumb.size) == 64 and thumb.mode == "RGB"
