"""A hypothesis fuzz target for the decode + fingerprint path: bytes in, a fingerprint or one of our
errors out. Anything else (another exception, a decode slower than SLOW_S) is a crash.

Inputs are small valid images of every format and pixel mode we read (seeds()), damaged by a
random list of mutations (bit flips, byte overwrites, interesting integers written over header
fields, truncation, insertion, deletion, duplicated runs), plus plain random bytes.

Used by tests/test_fuzz_decode.py (a few seconds, and the replay of every kept crash in
tests/data/fuzz/) and scripts/fuzz_decode.py (a bounded run of any length).
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import time
import warnings
from pathlib import Path

from hypothesis import strategies as st
from PIL import Image

from engine.errors import ImgsearchError
from engine.fingerprint import fingerprint, query_fingerprint

CRASHES = Path(__file__).parent / "data" / "fuzz"
PHOTO = Path(__file__).parent / "data" / "pool" / "photos" / "gcompris__kitten.jpg"
ICON = Path(__file__).parent / "data" / "pool" / "icons" / "openclipart__bunny_01.png"
SLOW_S = 10.0
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


@functools.cache
def seeds() -> tuple[bytes, ...]:
    with Image.open(PHOTO) as im:
        photo = im.convert("RGB").resize((96, 54))
    with Image.open(ICON) as im:
        icon = im.convert("RGBA").resize((48, 48))
    grey = photo.convert("L")
    deep = Image.frombytes("I;16", grey.size, bytes(b for v in grey.tobytes() for b in (v, v)))
    exif = Image.Exif()
    exif[0x0112] = 6
    return (
        _encode(photo, "JPEG", quality=80), _encode(photo, "JPEG", quality=80, progressive=True),
        _encode(photo, "JPEG", quality=80, exif=exif), _encode(photo.convert("CMYK"), "JPEG"),
        _encode(photo, "MPO", save_all=True, append_images=[photo]),
        _encode(photo, "PNG"), _encode(icon, "PNG"), _encode(icon.quantize(16), "PNG"), _encode(grey, "PNG"),
        _encode(deep, "PNG"), _encode(photo.convert("1"), "PNG"), _encode(photo, "PNG", exif=exif),
        _encode(photo, "WEBP", quality=70), _encode(icon, "WEBP", lossless=True),
        _encode(photo, "GIF"), _encode(icon.quantize(16), "GIF", save_all=True, append_images=[photo.quantize(16)]),
        _encode(photo, "BMP"), _encode(icon, "BMP"),
        _encode(photo, "TIFF"), _encode(photo, "TIFF", compression="tiff_lzw"),
        _encode(photo, "TIFF", compression="tiff_adobe_deflate"), _encode(photo, "TIFF", compression="packbits"),
        _encode(deep, "TIFF"), _encode(photo.convert("CMYK"), "TIFF"),
        # tiny and thin: the shapes that made OpenCV fail (tests/data/fuzz/)
        _encode(photo.resize((1, 1)), "PNG"), _encode(photo.resize((400, 3)), "JPEG"),
        _encode(photo.resize((2, 300)), "WEBP"),
    )


@st.composite
def mutated(draw) -> bytes:
    """A seed image with 1-8 mutations, or (1 in 20) random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        kind = draw(st.integers(0, 6))
        # mostly early (headers, chunk tables), sometimes anywhere
        end = len(data) if draw(st.booleans()) else min(len(data), 256)
        at = draw(st.integers(0, end - 1))
        if kind == 0:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1:
            data[at] = draw(st.integers(0, 255))
        elif kind == 2:
            value = draw(st.sampled_from(INTERESTING))
            width, order = draw(st.sampled_from([(2, ">H"), (2, "<H"), (4, ">I"), (4, "<I")]))
            data[at:at + width] = struct.pack(order, value & (0xFFFF if width == 2 else 0xFFFFFFFF))
        elif kind == 3:
            del data[draw(st.integers(1, len(data))):]
        elif kind == 4:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == 5:
            del data[at:at + draw(st.integers(1, 64))]
        else:
            run = data[at:at + draw(st.integers(1, 256))]
            data[at:at] = run * draw(st.integers(1, 4))
    return bytes(data)


def check(data: bytes, query: bool = False) -> str:
    """Run the target once. Returns 'ok' or our error code; raises on a crash or a slow input."""
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (query_fingerprint if query else fingerprint)(data, name="fuzzed")
        outcome = "ok"
    except ImgsearchError as e:
        if "fuzzed" not in e.message:
            raise AssertionError(f"error without the input's name: {e.message}") from None
        outcome = e.code
    seconds = time.perf_counter() - started
    if seconds > SLOW_S:
        raise AssertionError(f"took {seconds:.1f} s")
    return outcome


def keep(data: bytes, why: str) -> Path:
    """Save a crashing input as a regression case (tests/data/fuzz/crash-<sha>.bin + .txt)."""
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"crash-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(why.strip()[:2000] + "\n")
    return path
