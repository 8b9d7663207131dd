"""Safe image loading: bytes in, one oriented RGB picture out, or one of our errors.

Every image the engine looks at comes through :func:`load_image`. It

- refuses files over ``settings.max_bytes`` before reading them, and images over
  ``settings.max_pixels`` from the header, before anything is decoded;
- reads only JPEG, PNG, WebP, GIF (first frame), BMP and TIFF (first page), whatever the file
  is named, so that no other Pillow plugin ever sees untrusted bytes;
- decodes JPEGs at a reduced scale (libjpeg's DCT scaling, ``Image.draft``) when the caller
  says how many pixels it needs (``target_size``);
- applies the EXIF orientation, converts every mode to 8-bit RGB (16-bit and float greyscale
  are rescaled, not clipped) and composites transparency onto white, keeping the alpha mask;
- turns every failure into an :mod:`engine.errors` exception whose message names the input.
  Truncated files fail: ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False.

Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``: a warning above it, an error
above twice it) is process-wide and protects code that opens images elsewhere, so we keep it as a
backstop, but only ever raise it to our configured limit: then every image that trips it is above
our limit too and is rejected here as :class:`ImageTooLargeError`.
"""

from __future__ import annotations

import hashlib
import io
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import Settings, load_settings
from .errors import (
    EmptyInputError,
    ImageDecodeError,
    ImageTooLargeError,
    ImgsearchError,
    InputError,
    UnsupportedFormatError,
)

# Pillow format ids we open; any other plugin is never tried. MPO is how Pillow names some camera JPEGs.
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
BACKGROUND = (255, 255, 255)

# EXIF orientation -> the transposition that makes the picture upright (as ImageOps.exif_transpose)
_T = Image.Transpose
_ORIENTATION = {
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_270,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

Source = str | Path | bytes | bytearray | memoryview


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image. ``width``/``height`` are those of the upright original, even when
    ``image`` was decoded at a reduced scale (then ``image.size`` is smaller)."""

    image: Image.Image  # RGB, upright, transparency composited onto white
    alpha_mask: Image.Image | None  # 'L', same size as image; None if the image was fully opaque
    width: int
    height: int
    format: str  # Pillow's format name; MPO (multi-picture JPEG) is reported as JPEG
    sha256: bytes  # of the raw file bytes
    file_size: int
    name: str  # path or given name, used in messages

    @property
    def scale(self) -> float:
        """Decoded size / original size (1.0 unless a reduced JPEG decode was used)."""
        return self.image.width / self.width


def load_bytes(path: str | Path, settings: Settings | None = None, *, name: str | None = None) -> bytes:
    """The bytes of a regular file, refusing missing, unreadable and too large ones."""
    settings = settings or load_settings()
    label = name or str(path)
    try:
        info = Path(path).stat()
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{label}: is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{label}: is not a regular file")
        if info.st_size > settings.max_bytes:
            raise ImageTooLargeError(_too_many_bytes(label, info.st_size, settings.max_bytes))
        with open(path, "rb") as f:
            data = f.read(settings.max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except OSError as e:
        raise InputError(f"{label}: cannot be read ({e.strerror or e})") from None
    if len(data) > settings.max_bytes:  # it grew while we looked
        raise ImageTooLargeError(_too_many_bytes(label, len(data), settings.max_bytes))
    return data


def load_image(
    source: Source,
    *,
    name: str | None = None,
    settings: Settings | None = None,
    target_size: int | None = None,
) -> LoadedImage:
    """Decode a path or raw bytes into a :class:`LoadedImage`.

    target_size: the smallest longer side the caller needs; a JPEG larger than that is decoded
    at 1/2, 1/4 or 1/8 scale as long as its longer side stays >= target_size.
    """
    settings = settings or load_settings()
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = name or f"<{len(data)} bytes>"
        if len(data) > settings.max_bytes:
            raise ImageTooLargeError(_too_many_bytes(label, len(data), settings.max_bytes))
    else:
        label = name or str(source)
        data = load_bytes(source, settings, name=label)
    if not data:
        raise EmptyInputError(f"{label}: is empty (0 bytes)")
    _align_pil_limit(settings.max_pixels)
    try:
        return _decode(data, label, settings.max_pixels, target_size)
    except ImgsearchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's limit tripped first (the warning is raised when warnings are errors)
        raise ImageTooLargeError(f"{label}: has more than {settings.max_pixels:,} pixels") from None
    except MemoryError:
        raise ImageTooLargeError(f"{label}: not enough memory to decode it") from None
    except Exception as e:  # a decoder's error on untrusted bytes: report it as ours
        raise ImageDecodeError(f"{label}: is truncated or corrupt ({type(e).__name__}: {e})") from None


def thumbnail_jpeg(image: Image.Image, max_side: int = 256, quality: int = 80) -> bytes:
    """A small JPEG preview whose longer side is at most max_side."""
    thumb = image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()
    # Pillow first reduces by an integer factor (box filter), then resamples the last <= 2x with an
    # antialiased bilinear filter: half the time of LANCZOS and of an optimised encode, for a preview
    thumb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=quality)
    return out.getvalue()


# --- decoding ---------------------------------------------------------------------------------


def _decode(data: bytes, label: str, max_pixels: int, target_size: int | None) -> LoadedImage:
    try:
        im = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data, label) from None
    # no `with im`: closing would free the pixels of an RGB image that is returned as it is; the
    # file object is an in-memory BytesIO, so nothing leaks
    fmt = "JPEG" if im.format == "MPO" else str(im.format)
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{label}: the {fmt} header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: {width}x{height} = {width * height:,} pixels is more than the limit of {max_pixels:,}"
        )
    if target_size and fmt == "JPEG":
        _request_draft(im, target_size)
    im.load()
    orientation = _orientation(im)
    rgb, alpha = _to_rgb(im, label)
    if orientation in _ORIENTATION:
        rgb = rgb.transpose(_ORIENTATION[orientation])
        alpha = alpha.transpose(_ORIENTATION[orientation]) if alpha is not None else None
        if orientation >= 5:
            width, height = height, width
    return LoadedImage(
        image=rgb,
        alpha_mask=alpha,
        width=width,
        height=height,
        format=fmt,
        sha256=hashlib.sha256(data).digest(),
        file_size=len(data),
        name=label,
    )


def _request_draft(im: Image.Image, target_size: int) -> None:
    """Ask libjpeg for the smallest 1/1, 1/2, 1/4 or 1/8 decode whose longer side >= target_size."""
    width, height = im.size
    longer = max(width, height)
    if target_size >= longer:
        return
    ratio = target_size / longer
    im.draft("RGB", (max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio))))


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when missing or unreadable: bad metadata does not make the
    pixels unusable."""
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:
        return 1


def _to_rgb(im: Image.Image, label: str) -> tuple[Image.Image, Image.Image | None]:
    """8-bit RGB with transparency composited onto white, and the alpha mask if it matters."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_grey(im).convert("RGB"), None
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha = rgba.getchannel("A")
        rgb = rgba.convert("RGB")
        if alpha.getextrema()[0] == 255:
            return rgb, None
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgb, (0, 0), alpha)
        return out, alpha
    if mode == "RGB":
        return im, None
    try:
        return im.convert("RGB"), None
    except ValueError:
        raise UnsupportedFormatError(f"{label}: pixel mode {mode!r} cannot be converted to RGB") from None


def _high_depth_to_grey(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8 bits, scaled rather than clipped.

    I;16 (and PNG's 'I') use their nominal 0-65535 range. Other 'I' and 'F' data has no
    nominal range: 0-1 floats are scaled by 255, data within 0-255 is kept, and anything
    else is stretched from its minimum to its maximum.
    """
    values = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
        grey = (values.astype(np.uint32) + 128) // 257
    else:
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if im.mode == "F" and low >= 0.0 and high <= 1.0:
            grey = np.rint(values * 255.0)
        elif low >= 0.0 and high <= 255.0:
            grey = np.rint(values)
        else:
            grey = np.rint((values - low) * (255.0 / (high - low)))  # high > low here
    return Image.fromarray(grey.astype(np.uint8), "L")


# --- what the bytes are, when they are not an image we read ------------------------------------

_OTHER_IMAGE_SIGNATURES = (
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"icns", "an ICNS icon"),
    (b"qoif", "a QOI image"),
    (b"DDS ", "a DDS texture"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
)
_OUR_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"


def _unidentified(data: bytes, label: str) -> ImageDecodeError:
    """The most useful error for bytes that no plugin we allow would open."""
    head = data[:16]
    for signature, fmt in _OUR_SIGNATURES:
        if head.startswith(signature):
            return ImageDecodeError(f"{label}: starts like a {fmt} file but its header is truncated or corrupt")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageDecodeError(f"{label}: starts like a WebP file but its header is truncated or corrupt")
    for signature, what in _OTHER_IMAGE_SIGNATURES:
        if head.startswith(signature):
            return UnsupportedFormatError(f"{label}: is {what}; supported formats are {_SUPPORTED}")
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1")
        if brand in ("heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"):
            what = "a HEIC/HEIF image"
        elif brand in ("avif", "avis"):
            what = "an AVIF image"
        else:
            what = f"an ISO media file (brand {brand!r}, e.g. a video)"
        return UnsupportedFormatError(f"{label}: is {what}; supported formats are {_SUPPORTED}")
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and b"<svg" in text:
        return UnsupportedFormatError(f"{label}: is an SVG vector drawing; supported formats are {_SUPPORTED}")
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return ImageDecodeError(f"{label}: is an HTML document, not an image")
    if _looks_like_text(data[:4096]):
        return ImageDecodeError(f"{label}: is text, not an image")
    return ImageDecodeError(f"{label}: is not an image in a format we read ({_SUPPORTED})")


def _looks_like_text(sample: bytes) -> bool:
    try:
        decoded = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 3:  # not just a character cut in two at the end of the sample
            return False
        decoded = sample[: e.start].decode("utf-8")
    return bool(decoded) and sum(ch.isprintable() or ch in "\t\r\n" for ch in decoded) >= 0.95 * len(decoded)


def _too_many_bytes(label: str, size: int, limit: int) -> str:
    return f"{label}: {size:,} bytes is more than the limit of {limit:,} bytes"


def _align_pil_limit(max_pixels: int) -> None:
    """Raise (never lower) Pillow's global bomb limit to ours so that ours is the one that decides."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
