"""Commands for the people who run the engine: ingest.

Registered with ``engine.cli.command`` (imported through ``engine.cli.AREA_MODULES``). Exit
codes as everywhere: 0 all went well, 1 some inputs were bad (each reported, the rest done),
2 the command could not proceed.
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--errors", metavar="FILE", help="write each failed input as a JSON line to FILE")
    p.add_argument("--recheck", action="store_true",
                   help="read inputs whose URI is recorded already too (default: skip them)")
    p.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    json_flag(p, "print a machine-readable summary (and no progress bar)")


def _summary_text(obj: dict) -> str:
    text = (f"{obj['total']} inputs: added {obj['added']}, already stored {obj['duplicates']} "
            f"({obj['skipped']} skipped by URI), failed {obj['failed']} in {obj['seconds']:.1f} s")
    if obj.get("rate"):
        text += f" ({obj['rate']:.1f} inputs/s read)"
    for err in obj["errors"]:
        text += f"\n  {err['path']}: {err['code']}: {err['message']}"
    return text


@command("ingest", "store images from files, folders, URL lists, CSV exports and stdin", _ingest_arguments)
def cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import ingest, plan
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
        text += "".join(f"\n  {e['path']}: {e['code']}: {e['message']}" for e in listing.errors)
        emit(obj, args.json, text)
        return 1 if obj["missing"] or listing.errors else 0
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
                             progress=bar.update if bar else None, on_error=on_error)
    finally:
        if bar:
            bar.close()
        if errors_file:
            errors_file.close()
    summary = replace(summary, total=summary.total + len(listing.errors), errors=listing.errors + summary.errors)
    obj = summary.to_json()
    emit(obj, args.json, _summary_text(obj))
    return 1 if summary.failed else 0
