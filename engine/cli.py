"""The ``imgsearch`` command: thin commands over the library.

Every command prints readable text, or JSON with ``--json``. Exit codes: 0 all went well,
1 some inputs were bad (reported, the rest done), 2 the command itself could not proceed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__, db
from .config import load_settings
from .embedded import EmbeddedServer
from .errors import ConfigError, DatabaseError, ImgsearchError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def emit(obj: dict, as_json: bool, text: str | None = None) -> None:
    if as_json:
        print(json.dumps(obj), flush=True)
    else:
        print(text if text is not None else json.dumps(obj, indent=2), flush=True)


# --- db --------------------------------------------------------------------------------------
@command("db")
def cmd_db(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.action in ("start", "stop") and not settings.embedded:
        raise ConfigError(f"DATABASE_URL is set: 'imgsearch db {args.action}' manages only the embedded "
                          "server; start and stop your own server with its own tools")
    server = EmbeddedServer(settings.home)
    if args.action == "start":
        server.ensure_running()
        emit({"running": True, "home": str(settings.home)}, args.json,
             f"embedded PostgreSQL running, data in {server.pgdata}")
        return 0
    if args.action == "stop":
        stopped = server.stop()
        emit({"stopped": stopped}, args.json, "stopped" if stopped else "was not running")
        return 0
    with db.connect(settings, migrate_schema=False) as conn:
        applied = db.migrate(conn)
        if args.action == "migrate":
            emit({"applied": applied}, args.json,
                 f"applied migrations {applied}" if applied else "schema is up to date")
            return 0
        info = db.status(conn)
    info["data"] = str(server.pgdata) if settings.embedded else "external (DATABASE_URL)"
    info["embedded"] = settings.embedded
    rows = [
        ("database", info["data"]),
        ("server version", f"PostgreSQL {info['server_version']}"),
        ("pgvector", info["pgvector_version"]),
        ("schema version", f"{info['schema_version']} (latest {info['latest_schema_version']})"),
        *((name.replace("_", " "), count) for name, count in info["counts"].items()),
    ]
    lines = [f"{label + ':':<24}{value}" for label, value in rows]
    emit(info, args.json, "\n".join(lines))
    return 0


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def read_source(arg: str) -> tuple[Path | bytes, str]:
    """A file path, or an http(s) URL fetched with the safe fetcher."""
    if is_url(arg):
        from .fetch import fetch

        return fetch(arg).content, arg
    return Path(arg), arg


# --- hash ------------------------------------------------------------------------------------
@command("hash")
def cmd_hash(args: argparse.Namespace) -> int:
    from .fingerprint import fingerprint, to_json

    failed = 0
    for arg in args.files:
        try:
            source, name = read_source(arg)
            obj = to_json(fingerprint(source, name=name), arg)
        except ImgsearchError as exc:
            failed += 1
            obj = {"file": arg, "error": exc.to_dict()}
        if args.json:
            emit(obj, True)
        elif "error" in obj:
            print(f"{arg}: error {obj['error']['code']}: {obj['error']['message']}")
        else:
            print(f"{arg}: {obj['width']}x{obj['height']} {obj['format']} phash={obj['phash']} "
                  f"pdq={obj['pdq'][:16]}... q={obj['pdq_quality']} regions={len(obj['regions'])} "
                  f"keypoints={obj['keypoints']}")
    return 1 if failed else 0


# --- ingest ----------------------------------------------------------------------------------
@command("ingest")
def cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import ingest_files, iter_image_files

    files = list(iter_image_files(args.paths))
    with db.connect() as conn:
        bar = None
        if not args.json and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(files), unit="img", file=sys.stderr)
        summary = ingest_files(conn, files, workers=args.workers, progress=bar.update if bar else None)
        if bar:
            bar.close()
    obj = summary.to_json()
    text = f"added {summary.added}, already stored {summary.duplicates}, failed {len(summary.failed)}"
    for err in summary.failed:
        text += f"\n  {err['path']}: {err['code']}: {err['message']}"
    emit(obj, args.json, text)
    return 1 if summary.failed else 0


# --- search ----------------------------------------------------------------------------------
def _match_line(m) -> str:
    box = ",".join(f"{v:.2f}" for v in m.target_box)
    flags = "".join([" mirrored" if m.mirrored else "", " rotated" if m.rotated else ""])
    return f"  {m.score:>3}  {m.relation + flags:<26} id={m.id:<6} at [{box}]  {m.uri}"


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    from .fingerprint import query_fingerprint
    from .search import DEFAULT_RADIUS, search

    failed = 0
    with db.connect() as conn:
        for arg in args.queries:
            try:
                source, name = read_source(arg)
                q = query_fingerprint(source, name=name)
                matches = search(conn, q, limit=args.limit, min_score=args.min_score,
                                 radius=args.radius or DEFAULT_RADIUS)
            except ImgsearchError as exc:
                if isinstance(exc, DatabaseError):
                    raise
                failed += 1
                emit({"query": arg, "error": exc.to_dict()}, args.json, f"{arg}: error {exc.code}: {exc.message}")
                continue
            obj = {"query": arg, "matches": [m.to_json() for m in matches]}
            text = f"{arg}: {len(matches)} match(es)" + "".join("\n" + _match_line(m) for m in matches)
            emit(obj, args.json, text)
    return 1 if failed else 0


# --- demo ------------------------------------------------------------------------------------
@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    found, total = run_demo()
    print(f"\n{found} of {total} demo queries found exactly what they should")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgsearch", description="Reverse image search on PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"imgsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="manage the database: start|stop|status|migrate")
    p.add_argument("action", choices=["start", "stop", "status", "migrate"])
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("hash", help="print the fingerprint of image files or URLs")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("ingest", help="store images from files and folders")
    p.add_argument("paths", nargs="+")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")

    p = sub.add_parser("search", help="find stored images related to image files or URLs")
    p.add_argument("queries", nargs="+")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--min-score", type=int, default=0)
    p.add_argument("--radius", type=int, default=None, help="Hamming radius for pHash look-ups (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per query per line")

    sub.add_parser("demo", help="ingest the bundled sample photos and search with crops, mirrors, composites")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ImgsearchError as exc:
        print(f"imgsearch: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("imgsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
