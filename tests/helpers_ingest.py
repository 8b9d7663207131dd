"""Helpers shared by the ingest, ops and dupes tests: a fresh database per test, the CLI as a
subprocess, and images made on the spot (good ones in awkward formats, and bad ones)."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import psycopg
from PIL import Image
from psycopg import sql

POOL = Path(__file__).parent / "data" / "pool"
PHOTOS = sorted((POOL / "photos").glob("*.jpg"))
ICON = POOL / "icons" / "openclipart__bunny_01.png"


def fresh_database(pg_server, name: str) -> str:
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", name.lower())[-55:]
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return pg_server.url(name)


def cli(*args: str, stdin: str | None = None, env: dict | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=timeout, env={**os.environ, **(env or {})})


def last_json(r: subprocess.CompletedProcess) -> dict:
    assert r.stdout.strip(), r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A decompression bomb: a PNG declaring width x height with only 4 rows of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def good_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Awkward but valid images; name -> upright (width, height)."""
    photo = Image.open(PHOTOS[0]).convert("RGB")
    photo.thumbnail((400, 400))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cmyk.jpg").write_bytes(encode(photo.convert("CMYK"), "JPEG", quality=90))
    grey = photo.convert("L")
    deep = Image.frombytes("I;16", grey.size, (bytes(b for v in grey.tobytes() for b in (v, v))))
    (folder / "deep16.png").write_bytes(encode(deep, "PNG"))
    (folder / "palette_alpha.png").write_bytes(encode(Image.open(ICON).quantize(colors=64), "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is portrait
    (folder / "exif_rotated.jpg").write_bytes(encode(Image.open(PHOTOS[1]).convert("RGB"), "JPEG", quality=90,
                                                     exif=exif))
    w, h = Image.open(PHOTOS[1]).size
    return {"cmyk.jpg": photo.size, "deep16.png": photo.size, "palette_alpha.png": Image.open(ICON).size,
            "exif_rotated.jpg": (h, w)}


def bad_images(folder: Path) -> dict[str, str]:
    """Bad files; name -> the error code ingest reports."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = PHOTOS[2].read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_bytes(b"Shopping list:\n- eggs\n- milk\n" * 20)
    (folder / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    return {"truncated.jpg": "decode_error", "zero.jpg": "empty_input", "notes.jpg": "decode_error",
            "bomb.png": "too_large"}


def variants(folder: Path, n: int) -> list[Path]:
    """n distinct small JPEGs made from the pool photos (different sizes: different bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        im = Image.open(PHOTOS[k % len(PHOTOS)]).convert("RGB")
        side = 360 - 8 * (k // len(PHOTOS))
        im.thumbnail((side, side))
        path = folder / f"v{k:03d}.jpg"
        path.write_bytes(encode(im, "JPEG", quality=88))
        out.append(path)
    return out
