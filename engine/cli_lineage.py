"""Provenance commands: ``imgsearch lineage`` and ``imgsearch relink`` (engine.provenance)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import db
from .cli import command, emit, is_url, json_flag, read_source
from .provenance import DEFAULT_DEPTH

# how an entry relates to the line above it ({} takes "mirrored " / "rotated ")
ANCESTOR_TEXT = {"crop": "is a {}crop of", "near_duplicate": "is a {}copy of",
                 "composite": "is a {}composite made with"}
DESCENDANT_TEXT = {"crop": "has a {}crop", "near_duplicate": "has a {}copy", "composite": "is in a {}composite"}


def _box(box) -> str:
    return "[" + ",".join(f"{v:.2f}" for v in box) + "]"


def _flags(entry: dict) -> str:
    t = entry.get("transform") or {}
    return "".join(["mirrored " if t.get("mirrored") else "", "rotated " if t.get("rotated") else ""])


def render(tree: dict) -> str:
    """The lineage as two indented trees: what the image came from, and what was made from it."""
    image = tree["image"]
    head = f"#{image['id']} {image['uri']}" if image["id"] is not None else f"{image['uri']} (not stored)"
    lines = [head]

    def walk(entries: list[dict], key: str, indent: str) -> None:
        for i, e in enumerate(entries):
            last = i == len(entries) - 1
            if key == "ancestors":
                what = ANCESTOR_TEXT.get(e["relation"], e["relation"] + " {}of").format(_flags(e))
                where = f"shares {_box(e['target_box'])} of it"
            else:
                what = DESCENDANT_TEXT.get(e["relation"], e["relation"] + " {}").format(_flags(e))
                where = f"showing {_box(e['query_box'])} of the one above"
            lines.append(f"{indent}{'└─ ' if last else '├─ '}{what} #{e['id']} {e['uri']}  "
                         f"(score {e['score']}, {where})")
            walk(e[key], key, indent + ("   " if last else "│  "))

    lines.append("came from:" if tree["ancestors"] else "came from: nothing stored (an original, as far as we know)")
    walk(tree["ancestors"], "ancestors", "  ")
    lines.append("made from it:" if tree["descendants"] else "made from it: nothing stored")
    walk(tree["descendants"], "descendants", "  ")
    return "\n".join(lines)


def _lineage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="a stored image's id, an image file or an http(s) URL")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help=f"generations each way (default {DEFAULT_DEPTH})")
    json_flag(p, 'one object: {"image", "ancestors", "descendants"}')


@command("lineage", "what an image was cut, edited or composed from, and what was made from it", _lineage_arguments)
def cmd_lineage(args: argparse.Namespace) -> int:
    from .fingerprint import query_fingerprint
    from .provenance import lineage, lineage_of_query
    from .relations import encoding_quality

    with db.connect() as conn:
        if args.image.isdigit() and not Path(args.image).exists():
            tree = lineage(conn, int(args.image), args.depth)
        else:
            source, name = read_source(args.image)
            q = query_fingerprint(source, name=name)
            uri = args.image if is_url(args.image) else str(Path(args.image).resolve())
            quality = None if is_url(args.image) else encoding_quality(q.fp.format, q.fp.file_size, {}, [uri])
            tree = lineage_of_query(conn, q, args.depth, uri=uri, quality=quality)
    emit(tree, args.json, render(tree))
    return 0


def _relink_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pending", action="store_true",
                   help="only link the images not linked yet (after ingest --no-link, or an interrupted run)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    json_flag(p, "print a machine-readable summary")


@command("relink", "recompute the provenance edges of every stored image", _relink_arguments)
def cmd_relink(args: argparse.Namespace) -> int:
    from .provenance import link_pending, pending_count, relink

    with db.connect() as conn:
        bar = None
        if not args.json and sys.stderr.isatty():
            from tqdm import tqdm

            total = pending_count(conn) if args.pending else db.status(conn)["counts"]["images"]
            bar = tqdm(total=total, unit="img", file=sys.stderr)
        run = link_pending if args.pending else relink
        summary = run(conn, progress=bar.update if bar else None, workers=args.workers or os.cpu_count() or 1)
        if bar:
            bar.close()
    obj = summary.to_json()
    emit(obj, args.json, f"linked {summary.linked} images: {summary.edges} edges in {summary.seconds:.1f} s")
    return 0
