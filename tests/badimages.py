"""A corpus of hostile and awkward image files, generated from the pool photos (tests/data/pool).

``corpus()`` returns name -> :class:`Case`: the bytes and what the engine must do with them,
either decode them (``ok``, with the upright size when it is known) or refuse them with one of
our error codes. Some corrupt files may legitimately still decode (a flipped byte in the scan
data of a JPEG is only a wrong pixel): their ``codes`` include "ok".

Used by tests/test_bad_images.py (CLI `hash`, `ingest`, POST /api/search and /api/images on a
real server, peak memory on the bombs) and by scripts/fuzz_decode.py (its seed inputs).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

POOL = Path(__file__).parent / "data" / "pool"
PHOTO = POOL / "photos" / "gcompris__kitten.jpg"  # 640x360
PORTRAIT = POOL / "faces" / "face_recognition__biden.jpg"  # 282x640
ICON = POOL / "icons" / "openclipart__bunny_01.png"  # RGBA

OK = "ok"
DECODE, EMPTY, UNSUPPORTED, TOO_LARGE = "decode_error", "empty_input", "unsupported_format", "too_large"
HTTP_STATUS = {OK: 200, DECODE: 422, EMPTY: 422, UNSUPPORTED: 415, TOO_LARGE: 413}
# bombs: the files whose decoding could need a lot of memory (tests/test_bad_images.py measures it)
BOMBS = ("bomb_50000x50000.png", "bomb_gif_60000x60000.gif", "huge_animated_8000x8000x5000.gif",
         "bomb_tiff_50000x50000.tif", "bomb_webp_16383x16383.webp", "bomb_jpeg_65500x65500.jpg")


@dataclass(frozen=True)
class Case:
    data: bytes
    codes: frozenset[str]  # the acceptable outcomes: "ok" and/or error codes
    size: tuple[int, int] | None = None  # the upright (width, height) when it decodes

    @property
    def must_decode(self) -> bool:
        return self.codes == {OK}


def case(data: bytes, *codes: str, size: tuple[int, int] | None = None) -> Case:
    return Case(data, frozenset(codes), size)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


@functools.cache
def photo() -> Image.Image:
    with Image.open(PHOTO) as im:
        return im.convert("RGB")


@functools.cache
def icon() -> Image.Image:
    with Image.open(ICON) as im:
        return im.convert("RGBA")


# --- hand-built files -----------------------------------------------------------------------------
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, rows: int = 4) -> bytes:
    """An 8-bit greyscale PNG whose header declares width x height, with only a few rows of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def gif_animation(width: int, height: int, frames: int) -> bytes:
    """A GIF89a with a width x height logical screen and `frames` frames of 1x1 pixel each: tiny on
    disk, each frame a full-screen canvas once decoded."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0))  # 2-colour global table
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for k in range(frames):
        out += b"!\xf9\x04\x04\x02\x00\x00\x00"  # graphic control: 20 ms, do not dispose
        x, y = k % width, (k // width) % height
        out += b"," + struct.pack("<HHHHB", x, y, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one pixel of colour 1
    out += b";"
    return bytes(out)


def tiff_file(entries_per_ifd: list[list[tuple[int, int, int, bytes | int]]], pixel_data: bytes = b"\x80",
              next_links: list[int | None] | None = None) -> bytes:
    """A little-endian TIFF from a list of IFDs, each a list of (tag, type, count, value).

    A value of int is stored inline (SHORT/LONG); bytes of more than 4 go after the IFDs. The
    special value -1 ... -n for a LONG means "the offset of IFD n-1" (for SubIFD/Exif pointers).
    next_links[i]: the index of the IFD that IFD i links to as the next page (None: the last).
    """
    n = len(entries_per_ifd)
    next_links = next_links if next_links is not None else [i + 1 if i + 1 < n else None for i in range(n)]
    pixel_at = 8
    first_ifd = pixel_at + len(pixel_data) + (len(pixel_data) & 1)
    sizes = [2 + 12 * len(e) + 4 for e in entries_per_ifd]
    offsets = [first_ifd + sum(sizes[:i]) for i in range(n)]
    extra_at = first_ifd + sum(sizes)
    extra = bytearray()
    out = bytearray(b"II*\x00" + struct.pack("<I", offsets[0]) + pixel_data + b"\x00" * (len(pixel_data) & 1))
    for i, entries in enumerate(entries_per_ifd):
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in sorted(entries, key=lambda e: e[0]):
            if isinstance(value, bytes):
                if len(value) <= 4:
                    field = value.ljust(4, b"\x00")
                else:
                    field = struct.pack("<I", extra_at + len(extra))
                    extra += value + b"\x00" * (len(value) & 1)
            elif value == "PIXELS":
                field = struct.pack("<I", pixel_at)
            elif isinstance(value, int) and value < 0:
                field = struct.pack("<I", offsets[-value - 1])
            elif kind == 3:
                field = struct.pack("<HH", value, 0)
            else:
                field = struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, count) + field
        link = next_links[i]
        out += struct.pack("<I", offsets[link] if link is not None else 0)
    return bytes(out + extra)


SHORT, LONG = 3, 4


def tiff_image_tags(width: int = 1, height: int = 1) -> list:
    """An 8-bit greyscale, uncompressed image of width x height whose pixels start at offset 8."""
    return [(256, LONG, 1, width), (257, LONG, 1, height), (258, SHORT, 1, 8), (259, SHORT, 1, 1),
            (262, SHORT, 1, 1), (273, LONG, 1, "PIXELS"), (277, SHORT, 1, 1), (278, LONG, 1, height),
            (279, LONG, 1, width * height)]


def tiff_nested_subifds(depth: int) -> bytes:
    """IFD 0 -> SubIFD 1 -> SubIFD 2 ... depth deep (tag 330), and an Exif IFD pointer that points back at
    IFD 0 (a loop through the metadata)."""
    ifds = []
    for level in range(depth):
        tags = tiff_image_tags()
        if level + 1 < depth:
            tags.append((330, LONG, 1, -(level + 2)))  # SubIFDs -> the next one
        tags.append((34665, LONG, 1, -1))  # ExifIFD -> IFD 0: a cycle
        ifds.append(tags)
    return tiff_file(ifds, next_links=[None] * depth)


def tiff_pages(pages: int, loop: bool = False) -> bytes:
    """A chain of 1x1 pages; with loop, the last page's next-IFD offset points back at the first."""
    links: list[int | None] = [i + 1 for i in range(pages - 1)] + [0 if loop else None]
    return tiff_file([tiff_image_tags() for _ in range(pages)], next_links=links)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP (VP8L) header declaring width x height (max 16384) with no real image data."""
    bits = (width - 1) | ((height - 1) << 14)  # 14 bits each, then alpha flag and version 0
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to declare width x height."""
    data = bytearray(encode(photo().resize((16, 16)), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# --- damage -------------------------------------------------------------------------------------
def flipped(data: bytes, seed: int, count: int, start: int = 0, end: int | None = None) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    end = len(out) if end is None else end
    for _ in range(count):
        out[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    return bytes(out)


def with_orientation(upright: Image.Image, orientation: int) -> bytes:
    stored_as = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright if stored_as is None else upright.transpose(stored_as)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=90, exif=exif)


@functools.cache
def corpus() -> dict[str, Case]:
    im = photo()
    size = im.size
    jpeg, png = PHOTO.read_bytes(), encode(im, "PNG")
    webp, gif = encode(im, "WEBP", quality=80), encode(im, "GIF")
    grey = im.convert("L")
    cases: dict[str, Case] = {}

    # truncated and corrupted, per format
    for fmt, data in (("jpg", jpeg), ("png", png), ("webp", webp), ("gif", gif)):
        cases[f"truncated_half.{fmt}"] = case(data[: len(data) // 2], DECODE)
        cases[f"truncated_header.{fmt}"] = case(data[:14], DECODE)
        cases[f"header_only_magic.{fmt}"] = case(data[:4], DECODE, UNSUPPORTED)
        cases[f"corrupt_header.{fmt}"] = case(flipped(data, 1, 12, 0, 64), OK, DECODE, UNSUPPORTED, TOO_LARGE)
        cases[f"corrupt_body.{fmt}"] = case(flipped(data, 2, 40, len(data) // 4), OK, DECODE)
    cases["truncated_end.jpg"] = case(jpeg[:-600], DECODE)
    cases["truncated_end.gif"] = case(gif[:-20], OK, DECODE)  # the trailer is optional to some decoders
    cases["png_bad_crc.png"] = case(png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], DECODE)
    cases["jpeg_no_eoi.jpg"] = case(jpeg[:-2], OK, DECODE)
    cases["random_bytes.jpg"] = case(random.Random(3).randbytes(20_000), DECODE)

    # not images at all
    cases["zero_bytes.jpg"] = case(b"", EMPTY)
    cases["text.jpg"] = case(b"Shopping list:\n- eggs\n- milk\n" * 40, DECODE)
    cases["page.jpg"] = case(b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>",
                             DECODE)
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
           b'<circle cx="50" cy="50" r="40"/></svg>')
    cases["drawing.svg"] = case(svg, UNSUPPORTED)
    cases["drawing_named.jpg"] = case(svg, UNSUPPORTED)
    cases["billion_laughs.svg"] = case(b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">'
                                       b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><svg>&b;</svg>', UNSUPPORTED)

    # decompression bombs and huge declarations
    cases["bomb_50000x50000.png"] = case(png_declaring(50_000, 50_000), TOO_LARGE)
    cases["bomb_gif_60000x60000.gif"] = case(gif_animation(60_000, 60_000, 3), TOO_LARGE)
    cases["huge_animated_8000x8000x5000.gif"] = case(gif_animation(8000, 8000, 5000), OK, size=(8000, 8000))
    cases["bomb_tiff_50000x50000.tif"] = case(tiff_file([tiff_image_tags(50_000, 50_000)]), TOO_LARGE)
    cases["bomb_webp_16383x16383.webp"] = case(webp_declaring(16_383, 16_383), TOO_LARGE)
    cases["bomb_jpeg_65500x65500.jpg"] = case(jpeg_declaring(65_500, 65_500), TOO_LARGE)
    cases["png_zero_width.png"] = case(png_declaring(0, 10), DECODE)

    # TIFF structure: deep nesting, many pages, loops
    cases["tiff_nested_subifds_200.tif"] = case(tiff_nested_subifds(200), OK, DECODE, size=(1, 1))
    cases["tiff_2000_pages.tif"] = case(tiff_pages(2000), OK, size=(1, 1))
    cases["tiff_page_loop.tif"] = case(tiff_pages(3, loop=True), OK, DECODE, size=(1, 1))

    # awkward but valid: every one must decode, the right way up
    cases["cmyk.jpg"] = case(encode(im.convert("CMYK"), "JPEG", quality=90), OK, size=size)
    cases["cmyk.tif"] = case(encode(im.convert("CMYK"), "TIFF"), OK, size=size)
    deep = Image.frombytes("I;16", grey.size, bytes(b for v in grey.tobytes() for b in (v, v)))
    cases["grey16.png"] = case(encode(deep, "PNG"), OK, size=size)
    cases["grey16.tif"] = case(encode(deep, "TIFF"), OK, size=size)
    cases["rgb48.png"] = case(png_rgb48(im), OK, size=size)
    cases["palette_alpha.png"] = case(encode(icon().quantize(colors=64), "PNG"), OK, size=icon().size)
    cases["palette_alpha.gif"] = case(encode(icon().quantize(colors=64), "GIF", transparency=0), OK,
                                      size=icon().size)
    cases["rgba.webp"] = case(encode(icon(), "WEBP", lossless=True), OK, size=icon().size)
    cases["fully_transparent.png"] = case(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"), OK,
                                          size=(64, 64))
    with Image.open(PORTRAIT) as portrait:
        upright = portrait.convert("RGB")
    for orientation in range(1, 9):
        cases[f"exif_orientation_{orientation}.jpg"] = case(with_orientation(upright, orientation), OK,
                                                            size=upright.size)
    cases["one_pixel.png"] = case(encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), OK, size=(1, 1))
    cases["one_pixel.jpg"] = case(encode(Image.new("RGB", (1, 1), (200, 30, 30)), "JPEG"), OK, size=(1, 1))
    cases["one_pixel.gif"] = case(encode(Image.new("P", (1, 1)), "GIF"), OK, size=(1, 1))
    strip = im.resize((10_000, 1))
    cases["strip_10000x1.png"] = case(encode(strip, "PNG"), OK, size=(10_000, 1))
    cases["strip_1x10000.jpg"] = case(encode(strip.transpose(Image.Transpose.ROTATE_90), "JPEG"), OK,
                                      size=(1, 10_000))
    cases["strip_10000x2.webp"] = case(encode(im.resize((10_000, 2)), "WEBP"), OK, size=(10_000, 2))
    cases["flat_grey.png"] = case(encode(Image.new("L", (300, 200), 128), "PNG"), OK, size=(300, 200))
    return cases


def png_rgb48(im: Image.Image) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow does not write those itself)."""
    w, h = im.size
    raw = im.tobytes()
    rows = b"".join(b"\x00" + bytes(b for v in raw[y * w * 3:(y + 1) * w * 3] for b in (v, v)) for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def write_corpus(folder: Path, names=None) -> dict[str, Case]:
    """Write the corpus (or the named part of it) into folder; name -> Case."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {n: c for n, c in corpus().items() if names is None or n in names}
    for name, c in chosen.items():
        (folder / name).write_bytes(c.data)
    return chosen
