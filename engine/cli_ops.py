"""Commands for the people who run the engine: ingest, delete, stats, export, dupes.

Registered with ``engine.cli.command`` (imported through ``engine.cli.AREA_MODULES``). Exit
codes as everywhere: 0 all went well, 1 some inputs were bad (each reported, the rest done),
2 the command could not proceed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from . import db
from .cli import command, emit, json_flag
from .errors import SourceError


def human(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


# --- ingest ----------------------------------------------------------------------------------
def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH|URL|-",
                   help="files, folders (recursive), http(s) URLs; '-' reads more of them from stdin, one a line")
    p.add_argument("--urls", action="append", default=[], metavar="FILE", help="a file with one URL a line")
    p.add_argument("--csv", action="append", default=[], metavar="FILE",
                   help="a CSV with a 'uri' column; the other columns are kept as the image's metadata")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="in folders, take only files matching (default: image suffixes)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="in folders, skip files and folders")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--batch-size", type=_positive, default=None, metavar="N",
                   help="images a batch transaction stores at most (default 64; a batch is also written once "
                        "its first image is a second old)")
    p.add_argument("--errors", metavar="FILE", help="write each failed input as a JSON line to FILE")
    p.add_argument("--recheck", action="store_true",
                   help="read inputs whose URI is recorded already too (default: skip them)")
    p.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    p.add_argument("--no-link", action="store_true",
                   help="skip provenance linking of the new images (later: imgsearch relink --pending)")
    json_flag(p, "print a machine-readable summary (and no progress bar)")


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _summary_text(obj: dict) -> str:
    text = (f"{obj['total']} inputs: added {obj['added']}, already stored {obj['duplicates']} "
            f"({obj['skipped']} skipped by URI, {obj['by_sha256']} recognised by their bytes), failed {obj['failed']} "
            f"in {obj['seconds']:.1f} s")
    if obj.get("rate"):
        text += f" ({obj['rate']:.1f} inputs/s read)"
    if "linked" in obj:
        text += f"; linked {obj['linked']} ({obj['edges']} provenance edges)"
    for err in obj["errors"]:
        text += f"\n  {err['path']}: {err['code']}: {err['message']}"
    return text


@command("ingest", "store images from files, folders, URL lists, CSV exports and stdin", _ingest_arguments)
def cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import BATCH_IMAGES, ingest, plan
    from .provenance import link_pending
    from .sources import collect

    if not (args.paths or args.urls or args.csv):
        raise SourceError("nothing to ingest: give files, folders, URLs, --urls FILE, --csv FILE or - (stdin)")
    listing = collect(args.paths, url_lists=args.urls, csv_files=args.csv, include=args.include,
                      exclude=args.exclude)
    if args.dry_run:
        with db.connect() as conn:
            obj = plan(conn, listing.items, args.recheck).to_json()
        obj["errors"] = list(listing.errors)
        text = (f"would ingest {obj['to_ingest']} of {obj['total']} inputs ({obj['files']} files, {obj['urls']} URLs); "
                f"{obj['skipped']} are recorded already")
        text += "".join(f"\n  missing: {m}" for m in obj["missing"])
        text += "".join(f"\n  {e['path']}: {e['code']}: {e['message']}" for e in (*listing.errors, *obj["refused"]))
        emit(obj, args.json, text)
        return 1 if obj["missing"] or obj["refused"] or listing.errors else 0
    try:
        errors_file = open(args.errors, "w", encoding="utf-8") if args.errors else None  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"{args.errors}: cannot be written ({exc.strerror or exc})") from None

    def on_error(entry: dict) -> None:
        if errors_file:
            errors_file.write(json.dumps(entry) + "\n")
            errors_file.flush()

    bar = None
    try:
        for entry in listing.errors:
            on_error(entry)
        with db.connect() as conn:
            if not args.json and sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(total=len(listing.items), unit="img", file=sys.stderr, smoothing=0.1)
            summary = ingest(conn, listing.items, workers=args.workers, recheck=args.recheck,
                             progress=bar.update if bar else None, on_error=on_error,
                             batch_images=args.batch_size or BATCH_IMAGES)
            if bar:
                bar.close()
                bar = None
            # provenance: match every image not linked yet (this run's, or an interrupted run's)
            links = None if args.no_link else link_pending(conn, workers=args.workers or os.cpu_count() or 1)
    finally:
        if bar:
            bar.close()
        if errors_file:
            errors_file.close()
    summary = replace(summary, total=summary.total + len(listing.errors), errors=listing.errors + summary.errors)
    obj = summary.to_json() | ({"linked": links.linked, "edges": links.edges} if links else {})
    emit(obj, args.json, _summary_text(obj))
    return 1 if summary.failed else 0


# --- delete ----------------------------------------------------------------------------------
@command("delete", "delete images, each named by its id or by a URI it was ingested from", lambda p: (
    p.add_argument("refs", nargs="+", metavar="ID|URI"), json_flag(p, "one JSON object per ID|URI")))
def cmd_delete(args: argparse.Namespace) -> int:
    from .catalog import delete

    with db.connect() as conn:
        results = delete(conn, args.refs)
    missing = 0
    for d in results:
        missing += d.image_id is None
        obj = {"ref": d.ref, "deleted": d.image_id is not None, "id": d.image_id, "uris": list(d.uris)}
        text = (f"{d.ref}: deleted image {d.image_id} ({', '.join(d.uris) or 'no URI'})" if d.image_id is not None
                else f"{d.ref}: error not_found: no image with this id or URI")
        emit(obj, args.json, text)
    return 1 if missing else 0


# --- stats -----------------------------------------------------------------------------------
@command("stats", "count images, regions and URIs; database, table and index sizes", json_flag)
def cmd_stats(args: argparse.Namespace) -> int:
    from .catalog import stats

    with db.connect() as conn:
        info = stats(conn)
    lines = [f"{'images:':<24}{info['images']}", f"{'regions:':<24}{info['regions']}",
             f"{'URIs:':<24}{info['uris']}", f"{'images with keypoints:':<24}{info['images_with_keypoints']}",
             f"{'word postings (est.):':<24}{info['word_postings_estimate']}",
             f"{'database size:':<24}{human(info['database_bytes'])}", "tables (data / indexes):"]
    lines += [f"  {name:<22}{human(t['bytes']):>10} / {human(t['index_bytes'])}" for name, t in info["tables"].items()]
    lines.append("indexes:")
    lines += [f"  {name:<30}{human(i['bytes']):>10}" for name, i in info["indexes"].items()]
    emit(info, args.json, "\n".join(lines))
    return 0


# --- export ----------------------------------------------------------------------------------
@command("export", "every stored image: id, URIs, hashes, metadata", lambda p: (
    p.add_argument("--after-id", type=int, default=0, help="only images with a larger id (incremental exports)"),
    json_flag(p, "one JSON object per image and line (without it: id, pHash and URIs, tab-separated)")))
def cmd_export(args: argparse.Namespace) -> int:
    from .catalog import export

    try:
        with db.connect() as conn:
            for obj in export(conn, args.after_id):
                if args.json:
                    sys.stdout.write(json.dumps(obj) + "\n")
                else:
                    sys.stdout.write(f"{obj['id']}\t{obj['hashes']['phash']}\t{' '.join(obj['uris'])}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `imgsearch export --json | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# --- dupes -----------------------------------------------------------------------------------
def _dupes_arguments(p: argparse.ArgumentParser) -> None:
    from .dupes import LEVELS

    p.add_argument("--level", choices=list(LEVELS), default="normal",
                   help="strict: re-encoded/resized copies; normal: also light edits; loose: also crops, captions")
    json_flag(p, "one JSON object per group and line")


@command("dupes", "groups of near-duplicate images in the whole collection, best copy first", _dupes_arguments)
def cmd_dupes(args: argparse.Namespace) -> int:
    from .dupes import find_groups

    with db.connect() as conn:
        groups = find_groups(conn, args.level)
    for no, group in enumerate(groups, start=1):
        if args.json:
            emit({"group": no, **group.to_json()}, True)
        else:
            lines = [f"group {no}: {len(group.copies)} images"]
            for c in group.copies:
                mark = "*" if c.best else " "
                lines.append(f"  {mark} id={c.id:<8} {c.width}x{c.height} {human(c.file_size):>9} "
                             f"d={c.phash_bits:<2} {c.uris[0] if c.uris else ''}")
            print("\n".join(lines))
    if not args.json:
        extra = sum(len(g.copies) - 1 for g in groups)
        print(f"{len(groups)} group(s); {extra} image(s) besides the best copies (* = best: most pixels, then "
              "largest file)")
    return 0
